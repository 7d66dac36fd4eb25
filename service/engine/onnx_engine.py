"""The production engine: onnxruntime sessions over a model repository, numpy around them.

Torch-free by construction (numpy, onnxruntime, Pillow, scipy): the API and the
workers import this. Every network runs at its output stride; resizing, flips,
aggregation and normalisation are the shared code in `seam.common`, so results
equal the torch path's (`seam cam --engine torch`).

Thread safety: the engine is immutable after construction and onnxruntime's
`InferenceSession.run` may be called concurrently. A semaphore bounds how many
network passes run at once (on CPU one pass already uses every intra-op thread, so
by default passes queue while other requests do their numpy work).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seam.common.cam import (
    CamResult,
    MultiScaleConfig,
    Runner,
    cams_to_label,
    multiscale_cam,
    resize_bilinear,
    resize_matrices,
    stride_size,
)
from seam.common.image import Normalization, resize_rgb, scaled_size
from service.engine.base import METHODS, ModelInfo, SegmentResult
from service.engine.manifest import MANIFEST_NAME, MODEL_KINDS, Manifest, ManifestError, load_model_dir
from service.engine.runtime import CPU, RuntimeConfig, create_session, resolve_runtime, warm_up

log = logging.getLogger(__name__)

# The PCM builds an (hw x hw) affinity per image; onnxruntime keeps ~3 such tensors
# alive. A flip pair whose affinities would exceed this runs as two passes instead.
PCM_BATCH_BYTES = 1 << 30


@dataclass
class LoadedModel:
    name: str
    path: Path
    manifest: Manifest
    session: ort.InferenceSession
    provider: str

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.manifest.input.mean), tuple(self.manifest.input.std))

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name, kind=self.manifest.kind, backbone=self.manifest.backbone,
            classes=self.manifest.foreground, provider=self.provider,
            manifest=self.manifest.model_dump(mode="json"),
        )


class OnnxEngine:
    """`InferenceEngine` over `models_dir/*/manifest.json` (at most one model per kind).

    providers: 'auto' (CUDA only when a GPU is usable), 'cpu', 'cuda' or a list.
    threads: onnxruntime intra-op threads (default: the CPUs this process may use).
    select: {kind: model name} when the repository holds several models of a kind
      (default: the first by name, with a warning).
    max_concurrent_runs: network passes allowed at once (default 1 on CPU, 4 on GPU).
    """

    def __init__(
        self,
        models_dir: str | Path,
        providers: str = "auto",
        threads: int | None = None,
        *,
        warmup: bool = True,
        verify: bool = True,
        select: Mapping[str, str] | None = None,
        max_concurrent_runs: int | None = None,
        _model_dirs: Sequence[Path] | None = None,
    ) -> None:
        self.models_dir = Path(models_dir)
        self.runtime: RuntimeConfig = resolve_runtime(providers, threads)
        dirs = list(_model_dirs) if _model_dirs is not None else _scan(self.models_dir)
        if not dirs:
            raise ManifestError(f"no models in {self.models_dir} (expected sub-directories with {MANIFEST_NAME}; "
                                "create one with `seam export`)")
        manifests = {d: load_model_dir(d, verify=verify) for d in dirs}
        chosen = _choose(manifests, select or {})
        if "seam" not in chosen and "deeplab" not in chosen:
            raise ManifestError(f"{self.models_dir}: no seam or deeplab model, nothing to segment with "
                                f"(found: {', '.join(f'{d.name} ({m.kind})' for d, m in manifests.items())})")
        self._models: dict[str, LoadedModel] = {}
        for kind, d in chosen.items():
            sess, got = create_session(d / manifests[d].onnx.file, self.runtime)
            _check_io(sess, manifests[d], d)
            self._models[kind] = LoadedModel(d.name, d, manifests[d], sess, got)
            log.info("loaded %s (%s, %s) on %s, %d threads", d.name, kind, manifests[d].backbone, got,
                     self.runtime.threads)
        self._check_classes()
        on_cpu = all(m.provider == CPU for m in self._models.values())
        self._gate = threading.BoundedSemaphore(max_concurrent_runs or (1 if on_cpu else 4))
        if warmup:
            for m in self._models.values():
                warm_up(m.session)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, providers: str = "auto", threads: int | None = None,
                       **kwargs) -> OnnxEngine:
        """An engine over the single exported model in `model_dir` (models/NAME)."""
        model_dir = Path(model_dir)
        if not (model_dir / MANIFEST_NAME).is_file():
            raise ManifestError(f"{model_dir}: no {MANIFEST_NAME} (export a model with `seam export`)")
        return cls(model_dir.parent, providers, threads, _model_dirs=[model_dir], **kwargs)

    # --- the InferenceEngine protocol -------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [m.info() for m in self._models.values()]

    def foreground_classes(self) -> list[str]:
        m = self._models.get("seam") or self._models.get("deeplab")
        return m.manifest.foreground if m else []

    def methods(self) -> list[str]:
        """Best first: deeplab > rw (SEAM + AffinityNet) > pcm > cam."""
        have = set(self._models)
        out = []
        if "deeplab" in have:
            out.append("deeplab")
        if {"seam", "affinity"} <= have:
            out.append("rw")
        if "seam" in have:
            out += ["pcm", "cam"]
        return out

    @property
    def provider(self) -> str:
        return next(iter(self._models.values())).provider

    def cam(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        refined: bool = True,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        cls_threshold: float | None = None,
    ) -> CamResult:
        """Multi-scale (+ flip) CAMs of one (H, W, 3) uint8 image, as the authors' infer_SEAM.

        labels: foreground indices known present (their CAMs are returned); None =
        the classes whose averaged sigmoid score reaches cls_threshold.
        refined: PCM maps (cam_rv) rather than the raw CAM.
        """
        m = self._require("seam")
        rgb = _check_rgb(rgb)
        s = m.manifest.cam
        assert s is not None  # guaranteed by the manifest schema for seam models
        cfg = MultiScaleConfig(
            scales=_check_scales(scales, s.scales), flip=s.flip if flip is None else bool(flip),
            refined=refined, cls_threshold=s.cls_threshold if cls_threshold is None else float(cls_threshold),
            normalization=m.normalization,
        )
        self._check_size(m, rgb.shape[:2], cfg.scales)
        return multiscale_cam(rgb, self._runner(m), self._check_labels(labels, m), cfg)

    def segment(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        method: str | None = None,
        threshold: float | None = None,
        crf: bool = False,
    ) -> SegmentResult:
        """(H, W) uint8 label map (0 = background, c+1 = class c) by `method`
        (default: the best available). threshold: background score for cam/pcm."""
        available = self.methods()
        method = method or available[0]
        if method not in available:
            known = "" if method in METHODS else f" (known methods: {', '.join(METHODS)})"
            raise ValueError(f"method {method!r} is not available with the loaded models; "
                             f"available: {', '.join(available)}{known}")
        rgb = _check_rgb(rgb)
        if method == "deeplab":
            return self._segment_deeplab(rgb, labels, crf)
        seam = self._models["seam"].manifest
        thr = seam.cam.bg_threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {thr}")
        res = self.cam(rgb, labels, refined=method != "cam")
        if method == "rw":
            label = self._random_walk(rgb, res, crf)
        elif crf and res.classes:
            # as seam.common.crf.crf_refine_cams, with the manifest's CRF settings
            scores = np.concatenate([np.full((1, *res.cams.shape[1:]), thr, np.float32), res.cams], axis=0)
            scores = np.maximum(scores, 0)
            probs = scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-5)
            label = self._crf_label(seam, rgb, probs, res.classes)
        else:
            label = cams_to_label(res.cams, res.classes, thr)
        return SegmentResult(label=label, classes=res.classes, scores=res.scores, method=method, cams=res)

    # --- internals ----------------------------------------------------------------------

    def _require(self, kind: str) -> LoadedModel:
        m = self._models.get(kind)
        if m is None:
            raise ValueError(f"no {kind} model loaded (models: {', '.join(self._models) or 'none'})")
        return m

    def _run(self, m: LoadedModel, batch: np.ndarray) -> list[np.ndarray]:
        with self._gate:
            return m.session.run(list(m.manifest.onnx.outputs), {m.manifest.input.name: batch})

    def _runner(self, m: LoadedModel) -> Runner:
        """Runner for `multiscale_cam`: the flip pair as one batch unless the PCM's
        affinity matrices would be too large, then one pass at a time."""

        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            hw = stride_size(batch.shape[2]) * stride_size(batch.shape[3])
            if batch.shape[0] > 1 and 3 * 4 * hw * hw * batch.shape[0] > PCM_BATCH_BYTES:
                parts = [self._run(m, batch[i:i + 1]) for i in range(batch.shape[0])]
                return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            cam8, rv8 = self._run(m, batch)
            return cam8, rv8

        return run

    def _check_labels(self, labels: Sequence[int] | None, m: LoadedModel) -> list[int] | None:
        if labels is None:
            return None
        n = len(m.manifest.foreground)
        out = sorted({int(c) for c in labels})
        bad = [c for c in out if not 0 <= c < n]
        if bad:
            raise ValueError(f"label indices {bad} out of range 0..{n - 1} ({n} foreground classes)")
        return out

    def _check_size(self, m: LoadedModel, hw: tuple[int, int], scales: Sequence[float]) -> None:
        lim = m.manifest.input.max_size
        big = max(max(scaled_size(hw, s)) for s in scales)
        if big > lim:
            raise ValueError(f"image {hw[1]}x{hw[0]} at scale {max(scales):g} is {big} pixels on a side; "
                             f"the model accepts at most {lim}")

    def _random_walk(self, rgb: np.ndarray, res: CamResult, crf: bool) -> np.ndarray:
        """AffinityNet random walk of the PCM CAMs (the authors' infer_aff), optionally + dense CRF
        on the propagated class scores."""
        from seam.common.random_walk import (
            affinity_from_features,
            pooled_cams,
            random_walk_scores,
            upsample_argmax,
        )

        H, W = rgb.shape[:2]
        if not res.classes:
            return np.zeros((H, W), np.uint8)
        aff_model = self._models["affinity"]
        rw = aff_model.manifest.random_walk
        assert rw is not None  # guaranteed by the manifest schema for affinity models
        feat = self._affinity_features(aff_model, rgb)
        grid = pooled_cams(res.cams, feat.shape[1:], rw.alpha)
        scores = random_walk_scores(grid, affinity_from_features(feat, rw.radius), rw.beta, rw.logt)
        if not crf:
            return upsample_argmax(scores, (H, W), res.classes)
        h, w = scores.shape[1:]
        up = np.maximum(resize_bilinear(scores, (h * 8, w * 8))[:, :H, :W], 0)
        probs = up / np.maximum(up.sum(axis=0, keepdims=True), 1e-5)
        return self._crf_label(self._models["seam"].manifest, rgb, probs, res.classes)

    @staticmethod
    def _crf_label(manifest: Manifest, rgb: np.ndarray, probs: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """Dense CRF on (1 + K, H, W) probabilities [background, classes] -> label map."""
        from seam.common.crf import dense_crf

        lut = np.asarray([0, *[c + 1 for c in classes]], dtype=np.uint8)
        return lut[dense_crf(rgb, probs, **manifest.crf.kwargs()).argmax(axis=0)]

    def _affinity_features(self, m: LoadedModel, rgb: np.ndarray) -> np.ndarray:
        """(D, ceil(H/8), ceil(W/8)) features of the normalised image zero-padded to multiples of 8."""
        H, W = rgb.shape[:2]
        x = m.normalization(rgb)
        ph, pw = -(-H // 8) * 8, -(-W // 8) * 8
        padded = np.zeros((1, 3, ph, pw), np.float32)
        padded[0, :, :H, :W] = x
        return self._run(m, padded)[0][0]

    def _segment_deeplab(self, rgb: np.ndarray, labels: Sequence[int] | None, crf: bool) -> SegmentResult:
        """Softmax of the stride-8 logits upsampled (align_corners=False) to the image, averaged
        over the manifest's scales/flips; known image labels restrict the classes."""
        m = self._models["deeplab"]
        s = m.manifest.deeplab
        assert s is not None  # guaranteed by the manifest schema for deeplab models
        H, W = rgb.shape[:2]
        self._check_size(m, (H, W), s.scales)
        norm = m.normalization
        probs = None
        n = 0
        for sc in s.scales:
            h, w = scaled_size((H, W), sc)
            x = norm(resize_rgb(rgb, (h, w)))
            batch = np.stack([x, x[:, :, ::-1]]) if s.flip else x[None]
            logits = self._run(m, np.ascontiguousarray(batch))[0]
            ry, rx = resize_matrices(logits.shape[-2:], [((H, W), False)])
            up = np.einsum("Hh,bchw,Ww->bcHW", ry, logits.astype(np.float32), rx, optimize=True)
            if s.flip:
                up[1] = up[1][:, :, ::-1]
            up -= up.max(axis=1, keepdims=True)
            np.exp(up, out=up)
            up /= up.sum(axis=1, keepdims=True)
            p = up.sum(axis=0)
            probs = p if probs is None else probs + p
            n += up.shape[0]
        probs /= n
        keep = self._check_labels(labels, m)
        if keep is not None:
            mask = np.zeros(probs.shape[0], bool)
            mask[[0, *[c + 1 for c in keep]]] = True
            probs[~mask] = 0
            probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-12)
        if crf:
            from seam.common.crf import dense_crf

            probs = dense_crf(rgb, probs, **m.manifest.crf.kwargs())
        label = probs.argmax(axis=0).astype(np.uint8)
        scores = probs[1:].reshape(probs.shape[0] - 1, -1).max(axis=1).astype(np.float32)
        present = [int(c) - 1 for c in np.unique(label) if c > 0]
        classes = keep if keep is not None else present
        return SegmentResult(label=label, classes=classes, scores=scores, method="deeplab")

    def _check_classes(self) -> None:
        seam, deeplab = self._models.get("seam"), self._models.get("deeplab")
        if seam and deeplab and seam.manifest.class_names != deeplab.manifest.class_names:
            raise ManifestError(f"{seam.name} and {deeplab.name} have different class names; "
                                "a repository serves one label set")


def _scan(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        raise ManifestError(f"model repository {models_dir} does not exist")
    return [d for d in sorted(models_dir.iterdir())
            if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST_NAME).is_file()]


def _choose(manifests: dict[Path, Manifest], select: Mapping[str, str]) -> dict[str, Path]:
    """One model directory per kind, in MODEL_KINDS order."""
    unknown = set(select) - set(MODEL_KINDS)
    if unknown:
        raise ValueError(f"select: unknown kinds {sorted(unknown)}")
    chosen: dict[str, Path] = {}
    for kind in MODEL_KINDS:
        cands = [d for d, mf in manifests.items() if mf.kind == kind]
        if kind in select:
            match = [d for d in cands if d.name == select[kind]]
            if not match:
                raise ManifestError(f"select: no {kind} model named {select[kind]!r} "
                                    f"(have: {', '.join(d.name for d in cands) or 'none'})")
            chosen[kind] = match[0]
        elif cands:
            if len(cands) > 1:
                log.warning("%d %s models (%s); using %s (choose with select=)", len(cands), kind,
                            ", ".join(d.name for d in cands), cands[0].name)
            chosen[kind] = cands[0]
    return chosen


def _check_io(sess: ort.InferenceSession, mf: Manifest, d: Path) -> None:
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != [mf.input.name] or outs != list(mf.onnx.outputs):
        raise ManifestError(f"{d}: graph inputs {ins} / outputs {outs} do not match the manifest "
                            f"({mf.input.name} / {list(mf.onnx.outputs)})")


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}")
    if min(rgb.shape[:2]) < 1:
        raise ValueError("empty image")
    return rgb


def _check_scales(scales: Sequence[float] | None, default: tuple[float, ...]) -> tuple[float, ...]:
    if scales is None:
        return tuple(default)
    out = tuple(float(s) for s in scales)
    if not out or min(out) <= 0 or max(out) > 8:
        raise ValueError(f"scales must be a non-empty list in (0, 8], got {list(out)}")
    return out
