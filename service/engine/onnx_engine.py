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

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from seam.service.engine import methods
from seam.service.engine.admission import Admission, Work, check_size
from seam.service.engine.base import MAP_SIZES, MapSize, MemoryEstimate, ModelInfo, SegmentResult
from seam.service.engine.cancel import check_wanted
from seam.service.engine.loading import LoadedModel, choose_models, open_models
from seam.service.engine.runners.host import SegmentCall

from seam.common.cam import CamResult, MultiScaleConfig, Runner, label_argmax, multiscale_cam_batch, working_size
from seam.common.image import resize_rgb
from seam.common.pcm_blocks import PCM_BLOCK_BYTES
from seam.modelrepo.manifest import MANIFEST_NAME, ManifestError
from seam.modelrepo.pcm import run_pcm
from seam.modelrepo.runtime import CPU, RuntimeConfig, resolve_runtime, warm_up

DEFAULT_MEMORY_BUDGET = 4 << 30


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
        self.admission = Admission(int(memory_budget), int(pcm_block_bytes), max_side)
        self.models_dir = Path(models_dir)
        self.runtime: RuntimeConfig = resolve_runtime(providers, threads)
        chosen = choose_models(self.models_dir, verify=verify, select=select or {}, dirs=_model_dirs)
        if not methods.available(chosen):
            found = ", ".join(f"{d.name} ({kind})" for kind, (d, _) in chosen.items())
            needs = "; ".join(f"{m.name}: {' + '.join(m.models)}" for m in methods.METHODS.values())
            raise ManifestError(f"{self.models_dir}: no seam or deeplab model, nothing to segment with "
                                f"(found: {found}; the methods need {needs})")
        self._models: dict[str, LoadedModel] = open_models(chosen, self.runtime)
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

    @property
    def memory_budget(self) -> int:
        return self.admission.budget

    @property
    def pcm_block_bytes(self) -> int:
        return self.admission.pcm_block_bytes

    @property
    def provider(self) -> str:
        return next(iter(self._models.values())).provider

    # --- the InferenceEngine protocol -------------------------------------------------

    def models(self) -> list[ModelInfo]:
        return [m.info() for m in self._models.values()]

    def foreground_classes(self) -> list[str]:
        m = self._models.get("seam") or self._models.get("deeplab")
        return m.manifest.foreground if m else []

    def methods(self) -> list[str]:
        """The table's methods whose models are loaded, best first (e.g. deeplab, rw, pcm, cam)."""
        return methods.available(self._models)

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
        works = self._cams_working(rgbs, _label_lists(labels, len(rgbs)), refined, scales, flip, cls_threshold,
                                   max_side)
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
        """`segment` of several images by the method's runner (the CAM passes of same-size images
        run batched); every image is checked and admitted before any runs."""
        spec = methods.get(self._check_method(method))
        rgbs = [_check_rgb(r) for r in rgbs]
        main = self._models[spec.models[0]]
        checked = [self._check_labels(lb, main) for lb in _label_lists(labels, len(rgbs))]
        for rgb, lb in zip(rgbs, checked, strict=True):
            self.admission.admit(self, self._work(spec), rgb.shape[:2], lb, max_side)
        return spec.run(self, SegmentCall(spec.name, rgbs, checked, threshold, bool(crf), max_side))

    def estimate(
        self,
        hw: tuple[int, int],
        method: str | None = None,
        labels: Sequence[int] | None = None,
        max_side: int | None = None,
        batch: int = 1,
    ) -> MemoryEstimate:
        """Peak bytes of one request (see `InferenceEngine.estimate`): the largest network
        pass at the working size, the blocked PCM, the method's own passes, the working-size
        accumulators and the original-size outputs; with the largest max_side that would fit the budget."""
        spec = methods.get(self._check_method(method))
        return self.admission.estimate(self, self._work(spec), hw, labels, max_side, batch)

    # --- what runners may ask (runners.host.ModelHost) ----------------------------------

    def model(self, kind: str) -> LoadedModel:
        m = self._models.get(kind)
        if m is None:
            raise ValueError(f"no {kind} model loaded (models: {', '.join(self._models) or 'none'})")
        return m

    def run(self, m: LoadedModel, batch: np.ndarray, outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        check_wanted()  # each pass: a synchronous request whose client has gone stops here
        with self._gate:
            return m.session.run(list(outputs or m.manifest.onnx.outputs), {m.manifest.input.name: batch})

    def working_side(self, m: LoadedModel, max_side: int | None) -> int:
        return self.admission.working_side(m, max_side)

    def check_size(self, m: LoadedModel, hw: tuple[int, int], scales: Sequence[float]) -> None:
        check_size(m, hw, scales)

    def working_cams(self, rgbs: Sequence[np.ndarray], labels: Sequence[list[int] | None], refined: bool,
                     max_side: int | None) -> list[CamResult]:
        return self._cams_working(rgbs, labels, refined, None, None, None, max_side)

    def background_threshold(self, threshold: float | None) -> float:
        cam = self.model("seam").manifest.cam
        thr = cam.bg_threshold if threshold is None else float(threshold)
        if not 0.0 <= thr <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {thr}")
        return thr

    def crf_label(self, rgb: np.ndarray, probs: np.ndarray, classes: Sequence[int],
                  out_hw: tuple[int, int]) -> np.ndarray:
        """With the SEAM model's CRF settings."""
        from seam.common.crf import dense_crf

        return label_argmax(dense_crf(rgb, probs, **self.model("seam").manifest.crf.kwargs()), classes, out_hw)

    # --- internals ----------------------------------------------------------------------

    def _check_method(self, method: str | None) -> str:
        available = self.methods()
        method = method or available[0]
        if method not in available:
            known = "" if method in methods.METHODS else f" (known methods: {', '.join(methods.METHODS)})"
            raise ValueError(f"method {method!r} is not available with the loaded models; "
                             f"available: {', '.join(available)}{known}")
        return method

    def _work(self, spec: methods.Method) -> Work:
        """What running `spec` costs: its first model's passes, the PCM when it refines CAMs, its own."""
        return Work(self.model(spec.models[0]), spec.cams == "refined", spec.footprint)

    def _cams_working(
        self,
        rgbs: Sequence[np.ndarray],
        labels: Sequence[Sequence[int] | None],
        refined: bool,
        scales: Sequence[float] | None,
        flip: bool | None,
        cls_threshold: float | None,
        max_side: int | None,
    ) -> list[CamResult]:
        """CAMs at each image's working size; same-size images share a batch as far as the
        memory budget allows."""
        m = self.model("seam")
        s = m.manifest.cam
        assert s is not None  # guaranteed by the manifest schema for seam models
        labels = [self._check_labels(lb, m) for lb in labels]
        cfg = MultiScaleConfig(
            scales=_check_scales(scales, s.scales), flip=s.flip if flip is None else bool(flip),
            refined=refined, cls_threshold=s.cls_threshold if cls_threshold is None else float(cls_threshold),
            normalization=m.normalization,
        )
        side = self.working_side(m, max_side)
        work = Work(m, refined)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, r in enumerate(rgbs):
            groups.setdefault(r.shape[:2], []).append(i)
        out: list[CamResult | None] = [None] * len(rgbs)
        runner = self._runner(m, refined)
        for hw, idx in groups.items():
            work_hw = working_size(hw, side)
            check_size(m, work_hw, cfg.scales)
            n = self.admission.batch_size(self, work, hw, side, len(idx))
            for i in idx:
                self.admission.admit(self, work, hw, labels[i], side)
            for j in range(0, len(idx), n):
                part = idx[j:j + n]
                smalls = [resize_rgb(rgbs[i], work_hw) for i in part]
                got = multiscale_cam_batch(smalls, runner, [labels[i] for i in part], cfg)
                for i, res in zip(part, got, strict=True):
                    out[i] = res
        return out  # type: ignore[return-value]

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
                outs = self.run(m, batch[i:i + step], names)
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


def _check_scales(scales: Sequence[float] | None, default: tuple[float, ...]) -> tuple[float, ...]:
    if scales is None:
        return tuple(default)
    out = tuple(float(s) for s in scales)
    if not out or min(out) <= 0 or max(out) > 8:
        raise ValueError(f"scales must be a non-empty list in (0, 8], got {list(out)}")
    return out
