"""``xception-export inspect``: a SavedModel's signatures (as ``saved_model_cli show --all`` prints
them) plus the export metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xception_contract import layout

from xception_export import artifact
from xception_export.errors import UsageError


def resolve_version_dir(path: str | Path) -> Path:
    """A version directory, or the highest version under a base path."""
    found = layout.resolve_version_dir(path)
    if found is not None:
        return found
    raise UsageError(
        f"PATH must be a SavedModel version directory or a model base path. Received: PATH={path}"
    )


def _dims(shape: Any) -> list[int] | None:
    if shape.unknown_rank:
        return None
    return [int(d.size) for d in shape.dim]


def describe(version_dir: Path) -> dict[str, Any]:
    """Signatures (inputs/outputs with dtype, shape, tensor name; method name) and metadata."""
    from tensorflow.core.framework import types_pb2

    meta = artifact.read_saved_model(version_dir).meta_graphs[0]

    def tensors(infos: Any) -> dict[str, Any]:
        return {
            key: {
                "dtype": types_pb2.DataType.Name(info.dtype),
                "shape": _dims(info.tensor_shape),
                "name": info.name,
            }
            for key, info in sorted(infos.items())
        }

    signatures = {
        name: {
            "method_name": sig.method_name,
            "inputs": tensors(sig.inputs),
            "outputs": tensors(sig.outputs),
        }
        for name, sig in sorted(meta.signature_def.items())
        if name != "__saved_model_init_op"
    }
    return {
        "path": str(version_dir),
        "tags": list(meta.meta_info_def.tags),
        "signatures": signatures,
        "metadata": artifact.read_metadata(version_dir),
    }


# Export flags bounding the in-graph decode, in the order ``inspect`` lists them.
LIMIT_KEYS = ("max_pixels", "max_jpeg_scans", "max_gif_blocks", "max_png_text_chunks")


def summary_lines(metadata: dict[str, Any] | None) -> list[str]:
    """What a caller needs before the signature listing: input size, the preprocess baked in and
    the decode limits (each as its export flag). Empty for metadata without them."""
    if not metadata or "preprocess" not in metadata:
        return []
    height, width = metadata.get("input_size") or [metadata.get("image_size")] * 2
    lines = [
        f"Input: {height}x{width} (height x width) RGB",
        f"Preprocess baked in: {metadata['preprocess']} = {metadata['normalization']}",
    ]
    limits = [f"--{key.replace('_', '-')}={metadata[key]}" for key in LIMIT_KEYS if key in metadata]
    if limits:
        lines.append("Decode limits (refused with INVALID_ARGUMENT): " + " ".join(limits))
    return lines


def format_text(info: dict[str, Any]) -> str:
    """The summary (input size, preprocess, decode limits) first, then saved_model_cli-style
    signatures, then the metadata as JSON."""
    import json

    def shape(dims: list[int] | None) -> str:
        if dims is None:
            return "unknown_rank"
        return "(" + ", ".join(str(d) for d in dims) + (",)" if len(dims) == 1 else ")")

    metadata = info["metadata"]
    summary = summary_lines(metadata)
    lines = [f"SavedModel: {info['path']}", *summary, ""]
    lines += [
        f"MetaGraphDef with tag-set: '{', '.join(info['tags'])}' "
        "contains the following SignatureDefs:",
        "",
    ]
    for name, sig in info["signatures"].items():
        lines.append(f"signature_def['{name}']:")
        for kind in ("inputs", "outputs"):
            lines.append(
                f"  The given SavedModel SignatureDef contains the following {kind[:-1]}(s):"
            )
            for key, t in sig[kind].items():
                lines += [
                    f"    {kind}['{key}'] tensor_info:",
                    f"        dtype: {t['dtype']}",
                    f"        shape: {shape(t['shape'])}",
                    f"        name: {t['name']}",
                ]
        lines.append(f"  Method name is: {sig['method_name']}")
        lines.append("")
    lines.append("Export metadata:")
    lines.append(json.dumps(metadata, indent=2, sort_keys=True) if metadata else "  (none)")
    return "\n".join(lines)
