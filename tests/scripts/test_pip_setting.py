"""scripts/pip-setting.sh: the pip settings that scripts/install.sh hands to uv (and build.sh to an image
build) are read as pip reads them: the PIP_* variable first, else pip's configuration files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.script_module import REPO


def pip_setting(variable: str, key: str, env: dict[str, str]) -> str:
    script = f'source "{REPO}/scripts/pip-setting.sh"; pip_setting {variable} {key} "{sys.executable}"'
    clean = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    return subprocess.run(["bash", "-c", script], env={**clean, **env}, check=True, capture_output=True,
                          text=True).stdout.strip()


def test_the_variable_wins_over_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\ncert = /from/config.pem\n")
    assert pip_setting("PIP_CERT", "cert", {"PIP_CONFIG_FILE": str(config),
                                            "PIP_CERT": "/from/variable.pem"}) == "/from/variable.pem"


def test_the_config_file_answers_where_no_variable_is_set(tmp_path: Path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nfind-links = /srv/wheels /srv/more-wheels\n")
    assert pip_setting("PIP_FIND_LINKS", "find-links",
                       {"PIP_CONFIG_FILE": str(config)}) == "/srv/wheels /srv/more-wheels"


def test_nothing_set_gives_an_empty_setting() -> None:
    assert pip_setting("PIP_INDEX_URL", "index-url", {"PIP_CONFIG_FILE": os.devnull}) == ""
