"""Whether the export on disk is the one ``python -m export`` would make now (a cache hit), without making it.

``python -m bench`` and a sweep look for an export before starting an export process (a paddle import alone
costs seconds). A manifest that merely exists is not enough: an export made by older code, other package
versions (paddle2onnx, onnx...), other weights or another calibration set would be measured as if it were
current. This check computes the same cache keys the export itself compares, so a stale export is rebuilt.
"""

from __future__ import annotations

from core.manifest import MANIFEST_NAME, ManifestError, load_manifest, manifest_path_of


def is_current(export_argv: list[str]) -> bool:
    """True when ``python -m export <export_argv>`` (one model and opset, or ``--manifest``) would rebuild nothing.
    With ``--manifest`` the fp32 export is the one given, as it is: only the models derived from it are checked."""
    from export.cli import build_parser, requests_from_args
    from export.pipeline import cache_key, is_fresh
    from export.quantize.build import check_derived_request, derived_cache
    from export.quantize.cli import derived_request

    args = build_parser().parse_args(export_argv)
    if args.manifest:
        fp32_manifest = manifest_path_of(args.manifest)
    else:
        (request,) = requests_from_args(args)
        fp32_manifest = request.out_dir / MANIFEST_NAME
        if not is_fresh(fp32_manifest, cache_key(request)):
            return False
    try:
        fp32 = load_manifest(fp32_manifest)
    except ManifestError:
        return False
    return all(is_fresh(*derived_cache(fp32_manifest, fp32, derived, check_derived_request(derived)))
               for derived in derived_request(args))
