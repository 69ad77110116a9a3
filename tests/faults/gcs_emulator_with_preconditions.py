"""gcp-storage-emulator with GCS's create-only precondition, for the concurrent-publish tests.

The emulator ignores `ifGenerationMatch` (its upload handlers never read it), so against it two
creators of one object both "win". Real GCS refuses an upload with `ifGenerationMatch=0` once the
object exists (HTTP 412 Precondition Failed). This launcher adds exactly that to the emulator's
media and multipart upload handlers and starts it as `gcp-storage-emulator` would
(`python gcs_emulator_with_preconditions.py start --host ... --port ... --in-memory`). The emulator
serves one request at a time (a plain `http.server.HTTPServer`), so the check and the write
cannot interleave with another upload.
"""

from __future__ import annotations

import sys
from http import HTTPStatus

from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _refuse_existing(upload):  # noqa: ANN001, ANN202
    def guarded(request, response, storage):  # noqa: ANN001, ANN202
        if request.query.get("ifGenerationMatch") == ["0"]:
            name = request.query["name"][0] if "name" in request.query else request.data["meta"].get("name")
            try:
                storage.get_file_obj(request.params["bucket_name"], name)
            except NotFound:
                pass
            else:
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": "At least one of the pre-conditions you "
                                         "specified did not hold.", "errors": [{"reason": "conditionNotMet"}]}})
                return None
        return upload(request, response, storage)

    return guarded


objects._media_upload = _refuse_existing(objects._media_upload)
objects._multipart_upload = _refuse_existing(objects._multipart_upload)

if __name__ == "__main__":
    from gcp_storage_emulator.__main__ import main

    sys.exit(main())
