"""Write `.dvc/plots/index.html`: the page `dvc plots show` fills, with Vega, Vega-Lite and
vega-embed inlined so that it renders without internet (DVC's own page loads them from a CDN).

Usage: python scripts/vendor_vega.py   (needs `npm` and the npm registry; the result is committed)

The packages are pinned by version and by the sha512 of their npm tarball; their licences and
those of the libraries their builds bundle are in `.dvc/plots/THIRD_PARTY_LICENSES.txt`.
`.dvc/config` (`plots.html_template`) points `dvc plots show` at the page.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / ".dvc" / "plots" / "index.html"

# (package, version, build file, sha512 of the npm tarball), in load order.
PACKAGES = (
    ("vega", "5.33.1", "build/vega.min.js",
     "1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    ("vega-lite", "5.23.0", "build/vega-lite.min.js",
     "l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    ("vega-embed", "6.29.0", "build/vega-embed.min.js",
     "PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
)

# DVC replaces `{plot_divs}` with one <div> per plot, each calling vegaEmbed; `{refresh_tag}` is
# the auto-refresh <meta> of `--open`. There is no `{scripts}`: that is where DVC puts its CDN links.
HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh_tag}
<title>cybulde plots</title>
<style>
  body { font-family: sans-serif; margin: 1.5em; }
  body > div { display: inline-block; vertical-align: top; margin: 0 1.5em 1.5em 0; }
</style>
<!-- Vega, Vega-Lite and vega-embed (BSD-3-Clause; see THIRD_PARTY_LICENSES.txt beside this file),
     written by scripts/vendor_vega.py. -->
"""
TAIL = """</head>
<body>
<h1>cybulde plots</h1>
{plot_divs}
</body>
</html>
"""


def download(package: str, version: str, sha512: str, folder: Path) -> Path:
    """The npm tarball of `package@version`, checked against its pinned sha512."""
    name = subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=folder, check=True,
                          capture_output=True, text=True).stdout.strip().splitlines()[-1]
    tarball = folder / name
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != sha512:
        raise SystemExit(f"{package}@{version}: tarball sha512 {digest} != pinned {sha512}")
    return tarball


def build_script(tarball: Path, member: str) -> str:
    """The minified build without its source-map comment (the map is not vendored)."""
    with tarfile.open(tarball) as archive:
        source = archive.extractfile(f"package/{member}")
        assert source is not None
        text = source.read().decode("utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("//# sourceMappingURL=")]
    script = "\n".join(lines)
    if "</script" in script.lower() or any(f"{{{name}}}" in script for name in ("plot_divs", "scripts", "refresh_tag")):
        raise SystemExit(f"{member} contains text that would break the page")
    return script


def page(scripts: list[tuple[str, str, str]]) -> str:
    tags = "".join(f"<script>/* {package} {version} */\n{script}\n</script>\n" for package, version, script in scripts)
    return HEAD + tags + TAIL


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        scripts = [(package, version, build_script(download(package, version, sha512, Path(folder)), member))
                   for package, version, member, sha512 in PACKAGES]
    PAGE.write_text(page(scripts), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)} ({PAGE.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
