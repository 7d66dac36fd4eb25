"""The production engine: onnxruntime sessions over a model repository, numpy around them.

Torch-free by construction (numpy, onnxruntime, Pillow, scipy): the API and the
workers import this. Every network runs at its output stride; resizing, flips,
aggregation and normalisation are the shared code in `seam.common`, so results
equal the torch path's (`seam cam --engine torch`).

Any photo, bounded memory: an image whose long side exceeds the working side (the
manifest's `input.working_side`, a server cap or a per-request `max_side`) is resized to
it before the multi-scale passes, and maps/masks come back at the original size; the
PCM's hw x hw product runs in column blocks (`seam.modelrepo.pcm`); every request is
estimated before it runs and refused with `MemoryBudgetError` (HTTP 413) when its peak
would exceed the engine's memory budget.

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
from seam.service.engine.base import (
    MAP_SIZES,
    METHODS,
    MapSize,
    MemoryBudgetError,
    MemoryEstimate,
    ModelInfo,
    SegmentResult,
)
from seam.service.engine.cancel import check_wanted

from seam.common.cam import (
    CamResult,
    MultiScaleConfig,
    Runner,
    cams_to_label,
    label_argmax,
    multiscale_cam_batch,
    present_classes,
    resize_bilinear,
    resize_matrices,
    stride_size,
    working_size,
)
from seam.common.image import Normalization, resize_rgb, scaled_size
from seam.common.pcm_blocks import PCM_BLOCK_BYTES, pcm_peak_bytes
from seam.modelrepo.manifest import MANIFEST_NAME, MODEL_KINDS, Manifest, ManifestError, load_model_dir
from seam.modelrepo.pcm import run_pcm
from seam.modelrepo.runtime import CPU, RuntimeConfig, create_session, resolve_runtime, warm_up

log = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 4 << 30
# working side of models whose manifest names none (schema 1): the top of the release's 448-768
DEFAULT_WORKING_SIDE = 768
# classes assumed present when a request names none (for the size of the output maps)
ASSUMED_CLASSES = 3


@dataclass
class LoadedModel:
    name: str
    path: Path
    manifest: Manifest
    session: ort.InferenceSession
    provider: str
    pcm_session: ort.InferenceSession | None = None

    @property
    def normalization(self) -> Normalization:
        return Normalization(tuple(self.manifest.input.mean), tuple(self.manifest.input.std))

    def info(self) -> ModelInfo:
        cam = self.manifest.cam
        return ModelInfo(
            name=self.name, kind=self.manifest.kind, backbone=self.manifest.backbone,
            classes=self.manifest.foreground, provider=self.provider,
            manifest=self.manifest.model_dump(mode="json"), description=self.manifest.description,
            cls_threshold=cam.cls_threshold if cam else None, bg_threshold=cam.bg_threshold if cam else None,
        )


class OnnxEngine:
    """`InferenceEngine` over `models_dir/*/manifest.json` (at most one model per kind).

    providers: 'auto' (CUDA only when a GPU is usable), 'cpu', 'cuda' or a list.
    threads: onnxruntime intra-op threads (default: the CPUs this process may use).
    select: {kind: model name} when the repository holds several models of a kind
      (default: the first by name, with a warning).
    max_concurrent_runs: network passes allowed at once (default 1 on CPU, 4 on GPU).
    max_side: server-wide working side, replacing each manifest's `input.working_side`
      (requests may still ask for their own).
    memory_budget: bytes one request may hold at its peak (estimated before it runs).
    pcm_block_bytes: affinity bytes per PCM column block.
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
        max_side: int | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        pcm_block_bytes: int = PCM_BLOCK_BYTES,
        _model_dirs: Sequence[Path] | None = None,
    ) -> None:
        if max_side is not None and max_side < 8:
            raise ValueError(f"max_side must be >= 8, got {max_side}")
        self.max_side = max_side
        self.memory_budget = int(memory_budget)
        self.pcm_block_bytes = int(pcm_block_bytes)
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
            pcm = manifests[d].pcm
            pcm_sess = create_session(d / pcm.file, self.runtime)[0] if pcm is not None else None
            self._models[kind] = LoadedModel(d.name, d, manifests[d], sess, got, pcm_sess)
            want = manifests[d].precision.provider
            if want != "any" and (want == "cuda") != (got != CPU):
                log.warning("%s holds %s weights, which pay on %s; here it runs on %s (slower than fp32: "
                            "export an fp32 model for this provider)", d.name, manifests[d].precision.weights,
                            want.upper(), got)
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
        max_side: int | None = None,
        size: MapSize = "image",
    ) -> CamResult:
        """Multi-scale (+ flip) CAMs of one (H, W, 3) uint8 image, as the authors' infer_SEAM,
        each map in [0, 1].

        labels: foreground indices known present (their CAMs are returned); None =
        `predict_classes` at cls_threshold (default: the manifest's), less those whose map is all zero.
        refined: PCM maps (cam_rv) rather than the raw CAM (the PCM only runs when True).
        max_side: the passes run on the image resized to this long side when it is longer
        (default: the server's or the manifest's working side).
        size: "image" = maps at the image's size; "working" = at the size the passes ran at
        (no upsampling: what a client that draws them smaller needs).
        """
        return self.cam_many([rgb], [labels], refined, scales, flip, cls_threshold, max_side, size)[0]

    def cam_many(
        self,
        rgbs: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None] | None = None,
        refined: bool = True,
        scales: Sequence[float] | None = None,
        flip: bool | None = None,
        cls_threshold: float | None = None,
        max_side: int | None = None,
        size: MapSize = "image",
    ) -> list[CamResult]:
        """`cam` of several images; those of one size run as one onnxruntime batch per scale."""
        if size not in MAP_SIZES:
            raise ValueError(f"size must be one of {', '.join(MAP_SIZES)}, got {size!r}")
        rgbs = [_check_rgb(r) for r in rgbs]
        works = self._cams_working(rgbs, labels, refined, scales, flip, cls_threshold, max_side)
        if size == "working":
            return works
        return [w.at_size(r.shape[:2]) for w, r in zip(works, rgbs, strict=True)]

    def segment(
        self,
        rgb: np.ndarray,
        labels: Sequence[int] | None = None,
        method: str | None = None,
        threshold: float | None = None,
        crf: bool = False,
        max_side: int | None = None,
    ) -> SegmentResult:
        """(H, W) uint8 label map (0 = background, c+1 = class c) by `method`
        (default: the best available). threshold: background score for cam/pcm.
        `cams` of the result are at the working size (`.at_size(label.shape)` for the image's)."""
        return self.segment_many([rgb], [labels], method, threshold, crf, max_side)[0]

    def segment_many(
        self,
        rgbs: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None] | None = None,
        method: str | None = None,
        threshold: float | None = None,
        crf: bool = False,
        max_side: int | None = None,
    ) -> list[SegmentResult]:
        """`segment` of several images; the CAM passes of same-size images run batched."""
        method = self._check_method(method)
        rgbs = [_check_rgb(r) for r in rgbs]
        labels = _label_lists(labels, len(rgbs))
        if method == "deeplab":
            return [self._segment_deeplab(r, lb, crf, max_side) for r, lb in zip(rgbs, labels, strict=True)]
        seam = self._models["seam"].manifest
        thr = seam.cam.bg_threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {thr}")
        if method == "rw":
            for r, lb in zip(rgbs, labels, strict=True):  # the walk has its own working set: admit it first
                self._admit(r.shape[:2], "rw", lb, max_side)
        works = self._cams_working(rgbs, labels, method != "cam", None, None, None, max_side)
        out = []
        for rgb, res in zip(rgbs, works, strict=True):
            H, W = rgb.shape[:2]
            small = resize_rgb(rgb, res.cams.shape[1:]) if (method == "rw" or crf) else rgb
            if method == "rw":
                label = self._random_walk(small, res, crf, (H, W))
            elif crf and res.classes:
                # as seam.common.crf.crf_refine_cams, with the manifest's CRF settings
                scores = np.concatenate([np.full((1, *res.cams.shape[1:]), thr, np.float32), res.cams], axis=0)
                scores = np.maximum(scores, 0)
                probs = scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-5)
                label = self._crf_label(seam, small, probs, res.classes, (H, W))
            else:
                label = cams_to_label(res.cams, res.classes, thr, out_hw=(H, W))
            # the classes reported are those the mask shows (a threshold can leave one empty)
            out.append(SegmentResult(label=label, classes=present_classes(label, res.classes), scores=res.scores,
                                     method=method, cams=res))
        return out

    def estimate(
        self,
        hw: tuple[int, int],
        method: str | None = None,
        labels: Sequence[int] | None = None,
        max_side: int | None = None,
        batch: int = 1,
    ) -> MemoryEstimate:
        """Peak bytes of one request (see `InferenceEngine.estimate`): the largest network
        pass at the working size, the blocked PCM, the working-size accumulators and the
        original-size outputs; with the largest max_side that would fit the budget."""
        method = method or self.methods()[0]
        H, W = (int(v) for v in hw)
        side = self._max_side(self._model_for(method), max_side)
        need = self._needed(method, (H, W), labels, side, batch)
        suggested = None
        if need > self.memory_budget:
            lo, hi = 8, min(side, max(H, W))
            while lo < hi:  # largest side that fits: memory grows with the side
                mid = (lo + hi + 1) // 2
                if self._needed(method, (H, W), labels, mid, batch) <= self.memory_budget:
                    lo = mid
                else:
                    hi = mid - 1
            if self._needed(method, (H, W), labels, lo, batch) <= self.memory_budget:
                suggested = lo
        return MemoryEstimate(need, self.memory_budget, (H, W), working_size((H, W), side), side, suggested)

    # --- internals ----------------------------------------------------------------------

    def _require(self, kind: str) -> LoadedModel:
        m = self._models.get(kind)
        if m is None:
            raise ValueError(f"no {kind} model loaded (models: {', '.join(self._models) or 'none'})")
        return m

    def _check_method(self, method: str | None) -> str:
        available = self.methods()
        method = method or available[0]
        if method not in available:
            known = "" if method in METHODS else f" (known methods: {', '.join(METHODS)})"
            raise ValueError(f"method {method!r} is not available with the loaded models; "
                             f"available: {', '.join(available)}{known}")
        return method

    def _model_for(self, method: str) -> LoadedModel:
        return self._require("deeplab" if method == "deeplab" else "seam")

    def _max_side(self, m: LoadedModel, requested: int | None) -> int:
        """The working side of a request: its own, else the server's, else the manifest's (else
        the release's 768), defaults clamped to what the graph accepts at the largest scale."""
        scales = m.manifest.deeplab.scales if m.manifest.kind == "deeplab" else m.manifest.cam.scales
        top = int(m.manifest.input.max_size / max(scales))
        if requested is None:
            default = self.max_side or m.manifest.input.working_side or DEFAULT_WORKING_SIDE
            return max(8, min(default, top))
        requested = int(requested)
        if not 8 <= requested <= top:
            raise ValueError(f"max_side must be in [8, {top}] for {m.name} (its graph takes at most "
                             f"{m.manifest.input.max_size} pixels a side at scale {max(scales):g}), got {requested}")
        return requested

    def _needed(self, method: str, hw: tuple[int, int], labels: Sequence[int] | None, side: int | None,
                batch: int) -> int:
        """Estimated peak bytes (see `estimate`)."""
        m = self._model_for(method)
        mf = m.manifest
        H, W = hw
        h0, w0 = working_size(hw, side)
        C = len(mf.class_names)
        K = len(labels) if labels is not None else min(C - 1, ASSUMED_CLASSES)
        scales = mf.deeplab.scales if method == "deeplab" else mf.cam.scales
        sizes = [scaled_size((h0, w0), s) for s in scales]
        bh, bw = max(sizes, key=lambda t: t[0] * t[1])
        net = mf.input.bytes_per_pixel * bh * bw  # one pass: the runner splits batches to fit
        if method in ("pcm", "rw"):
            net += pcm_peak_bytes(stride_size(bh) * stride_size(bw), C, _pcm_dim(m), budget=self.pcm_block_bytes)
        work = 4 * 4 * (C - 1) * h0 * w0  # accumulated maps, a flip pair and einsum temporaries
        if method == "rw":
            aff = self._models["affinity"].manifest
            g8 = stride_size(h0) * stride_size(w0)
            net = max(net, aff.input.bytes_per_pixel * h0 * w0)
            work += g8 * 200 * 16  # sparse transition matrix and its powers (radius 5: ~80 pairs a node)
        outputs = K * H * W * 4 * 2 + H * W * 8  # maps at the image's size (+ resize temporary), labels
        inputs = H * W * 3 * 2  # decoded image and its working-size copy
        return int(net + batch * (work + outputs + inputs))

    def _admit(self, hw: tuple[int, int], method: str, labels: Sequence[int] | None, max_side: int | None,
               batch: int = 1) -> None:
        est = self.estimate(hw, method, labels, max_side, batch)
        if not est.fits:
            raise MemoryBudgetError(est)

    def _cams_working(
        self,
        rgbs: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None] | None,
        refined: bool,
        scales: Sequence[float] | None,
        flip: bool | None,
        cls_threshold: float | None,
        max_side: int | None,
    ) -> list[CamResult]:
        """CAMs at each image's working size; same-size images share a batch as far as the
        memory budget allows."""
        m = self._require("seam")
        s = m.manifest.cam
        assert s is not None  # guaranteed by the manifest schema for seam models
        labels = [self._check_labels(lb, m) for lb in _label_lists(labels, len(rgbs))]
        cfg = MultiScaleConfig(
            scales=_check_scales(scales, s.scales), flip=s.flip if flip is None else bool(flip),
            refined=refined, cls_threshold=s.cls_threshold if cls_threshold is None else float(cls_threshold),
            normalization=m.normalization,
        )
        side = self._max_side(m, max_side)
        method = "pcm" if refined else "cam"
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(rgbs):
            groups.setdefault(r.shape[:2], []).append(i)
        out: list[CamResult | None] = [None] * len(rgbs)
        runner = self._runner(m, refined)
        for hw, idx in groups.items():
            work_hw = working_size(hw, side)
            self._check_size(m, work_hw, cfg.scales)
            n = len(idx)
            while n > 1 and self._needed(method, hw, None, side, n) > self.memory_budget:
                n = (n + 1) // 2
            for i in idx:
                self._admit(hw, method, labels[i], side)
            for j in range(0, len(idx), n):
                part = idx[j:j + n]
                smalls = [resize_rgb(rgbs[i], work_hw) for i in part]
                got = multiscale_cam_batch(smalls, runner, [labels[i] for i in part], cfg)
                for i, res in zip(part, got, strict=True):
                    out[i] = res
        return out  # type: ignore[return-value]

    def _run(self, m: LoadedModel, batch: np.ndarray, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        check_wanted()  # each pass: a synchronous request whose client has gone stops here
        with self._gate:
            return m.session.run(list(outputs or m.manifest.onnx.outputs), {m.manifest.input.name: batch})

    def _runner(self, m: LoadedModel, refined: bool) -> Runner:
        """Runner for `multiscale_cam_batch`: (cam8, cam_rv8), the PCM in column blocks and only
        when `refined` (else (cam8, cam8)); a batch is cut into passes that fit a quarter of
        the memory budget."""
        cam_name, *pcm_names = m.manifest.onnx.outputs
        names = [cam_name, *pcm_names] if refined else [cam_name]

        def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            per_item = m.manifest.input.bytes_per_pixel * batch.shape[2] * batch.shape[3]
            step = max(1, int(self.memory_budget // 4 // max(per_item, 1.0)))
            cams, rvs = [], []
            for i in range(0, batch.shape[0], step):
                outs = self._run(m, batch[i:i + step], names)
                cams.append(outs[0])
                if refined:
                    with self._gate:
                        rvs.append(run_pcm(m.pcm_session, outs[1], outs[2], self.pcm_block_bytes))
            cam = np.concatenate(cams) if len(cams) > 1 else cams[0]
            if not refined:
                return cam, cam
            return cam, np.concatenate(rvs) if len(rvs) > 1 else rvs[0]

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
                             f"the model accepts at most {lim} (lower max_side)")

    def _random_walk(self, rgb: np.ndarray, res: CamResult, crf: bool, out_hw: tuple[int, int]) -> np.ndarray:
        """AffinityNet random walk of the PCM CAMs (the authors' infer_aff) at the working size
        (`rgb` and `res` share it), optionally + dense CRF; labels at `out_hw`."""
        from seam.common.random_walk import affinity_from_features, pooled_cams, random_walk_scores, walk_radius

        h0, w0 = rgb.shape[:2]
        if not res.classes:
            return np.zeros(out_hw, np.uint8)
        aff_model = self._models["affinity"]
        rw = aff_model.manifest.random_walk
        assert rw is not None  # guaranteed by the manifest schema for affinity models
        feat = self._affinity_features(aff_model, rgb)
        grid = pooled_cams(res.cams, feat.shape[1:], rw.alpha)
        # the release shrinks the pair radius on grids too small for it (seam.common.random_walk)
        radius = walk_radius(feat.shape[1], feat.shape[2], rw.radius)
        scores = random_walk_scores(grid, affinity_from_features(feat, radius), rw.beta, rw.logt)
        h, w = scores.shape[1:]
        # the authors' upsampling: to the padded grid * 8, cropped to the image
        up = resize_bilinear(scores, (h * 8, w * 8))[:, :h0, :w0]
        if not crf:
            return label_argmax(up, res.classes, out_hw)
        up = np.maximum(up, 0)
        probs = up / np.maximum(up.sum(axis=0, keepdims=True), 1e-5)
        return self._crf_label(self._models["seam"].manifest, rgb, probs, res.classes, out_hw)

    @staticmethod
    def _crf_label(manifest: Manifest, rgb: np.ndarray, probs: np.ndarray, classes: Sequence[int],
                   out_hw: tuple[int, int]) -> np.ndarray:
        """Dense CRF on (1 + K, h, w) probabilities [background, classes] of `rgb` -> labels at out_hw."""
        from seam.common.crf import dense_crf

        return label_argmax(dense_crf(rgb, probs, **manifest.crf.kwargs()), classes, out_hw)

    def _affinity_features(self, m: LoadedModel, rgb: np.ndarray) -> np.ndarray:
        """(D, ceil(H/8), ceil(W/8)) features of the normalised image zero-padded to multiples of 8."""
        H, W = rgb.shape[:2]
        x = m.normalization(rgb)
        ph, pw = -(-H // 8) * 8, -(-W // 8) * 8
        padded = np.zeros((1, 3, ph, pw), np.float32)
        padded[0, :, :H, :W] = x
        return self._run(m, padded)[0][0]

    def _segment_deeplab(self, rgb: np.ndarray, labels: Sequence[int] | None, crf: bool,
                         max_side: int | None) -> SegmentResult:
        """Softmax of the stride-8 logits upsampled (align_corners=False) to the working size,
        averaged over the manifest's scales/flips; known image labels restrict the classes;
        labels at the image's size."""
        m = self._models["deeplab"]
        s = m.manifest.deeplab
        assert s is not None  # guaranteed by the manifest schema for deeplab models
        H, W = rgb.shape[:2]
        keep = self._check_labels(labels, m)
        self._admit((H, W), "deeplab", keep, max_side)
        h0, w0 = working_size((H, W), self._max_side(m, max_side))
        self._check_size(m, (h0, w0), s.scales)
        small = resize_rgb(rgb, (h0, w0))
        norm = m.normalization
        probs = None
        n = 0
        for sc in s.scales:
            h, w = scaled_size((h0, w0), sc)
            x = norm(resize_rgb(small, (h, w)))
            batch = np.stack([x, x[:, :, ::-1]]) if s.flip else x[None]
            logits = self._run(m, np.ascontiguousarray(batch))[0]
            ry, rx = resize_matrices(logits.shape[-2:], [((h0, w0), False)])
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
        if keep is not None:
            mask = np.zeros(probs.shape[0], bool)
            mask[[0, *[c + 1 for c in keep]]] = True
            probs[~mask] = 0
            probs /= np.maximum(probs.sum(axis=0, keepdims=True), 1e-12)
        if crf:
            from seam.common.crf import dense_crf

            probs = dense_crf(small, probs, **m.manifest.crf.kwargs())
        label = label_argmax(probs, range(probs.shape[0] - 1), (H, W))
        scores = probs[1:].reshape(probs.shape[0] - 1, -1).max(axis=1).astype(np.float32)
        classes = present_classes(label, keep if keep is not None else range(probs.shape[0] - 1))
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


def _label_lists(labels: Sequence[Sequence[int] | None] | None, n: int) -> list[Sequence[int] | None]:
    if labels is None:
        return [None] * n
    labels = list(labels)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} label lists")
    return labels


def _pcm_dim(m: LoadedModel) -> int:
    """Channels of the PCM embedding (pcm_g), from the graph when it is static."""
    d = m.session.get_outputs()[-1].shape[1]
    return d if isinstance(d, int) else 256


def _check_scales(scales: Sequence[float] | None, default: tuple[float, ...]) -> tuple[float, ...]:
    if scales is None:
        return tuple(default)
    out = tuple(float(s) for s in scales)
    if not out or min(out) <= 0 or max(out) > 8:
        raise ValueError(f"scales must be a non-empty list in (0, 8], got {list(out)}")
    return out
