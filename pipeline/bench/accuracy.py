"""Every backend's detections against ultralytics ``predict`` (the PyTorch reference)."""

from __future__ import annotations

from detectors.types import Detection
from pipeline.bench.footage import sample_frames
from pipeline.bench.matching import match_detections, merge_matches


class AccuracySection:
    """``accuracy``: each backend against the PyTorch reference, frame by frame."""

    def accuracy_frames(self) -> list:
        return [
            f for path in self.files[:7] for f in sample_frames(path, self.args.accuracy_frames)
        ]

    def reference(self, frames: list) -> list[list[Detection]]:
        """ultralytics ``predict`` (PyTorch, fp32) on each frame: the accuracy reference."""
        from detectors.loading import load_model, select_device  # noqa: PLC0415 (imports torch: loaded only when needed)

        device = select_device(self.det_dict["device"])
        ref_model = load_model(self.det_dict["weights"], device)
        ref_det = self.detector("torch", tracker="none")  # for names and class ids
        ref = []
        for frame in frames:
            r = ref_model.predict(
                frame,
                imgsz=self.args.imgsz,
                conf=self.det_dict["conf"],
                iou=self.det_dict["iou"],
                classes=ref_det.classes,
                device=device,
                verbose=False,
            )[0]
            b = r.boxes
            ref.append(
                [
                    Detection(int(c), "", float(p), tuple(float(v) for v in xy))
                    for xy, p, c in zip(
                        b.xyxyn.cpu().numpy(),
                        b.conf.cpu().numpy(),
                        b.cls.cpu().numpy(),
                        strict=True,
                    )
                ]
            )
        return ref

    def score(self, det, frames: list, ref: list[list[Detection]]) -> dict:
        """``det``'s detections on ``frames`` against ``ref`` (tolerances of the backend tests)."""
        got: list = []
        for k in range(0, len(frames), 4):  # mixed cameras in one batch, like the worker
            got += det.detect(frames[k : k + 4])
        return merge_matches(
            [match_detections(r, g, self.det_dict["conf"]) for r, g in zip(ref, got, strict=True)]
        )

    def accuracy(self) -> None:
        frames = self.accuracy_frames()
        ref = self.reference(frames)
        out = {}
        self.emit(f"\n## Accuracy vs ultralytics predict (PyTorch), {len(frames)} footage frames")
        self.emit(
            "| backend | reference boxes | matched | missing | extra | borderline | min IoU | max conf diff | ok |"
        )
        self.emit("|---|---|---|---|---|---|---|---|---|")
        for name in self.backends():
            stats = self.score(self.detector(name, tracker="none"), frames, ref)
            out[name] = stats
            self.emit(
                f"| {name} | {stats['ref']} | {stats['matched']} | {stats['missing']} | "
                f"{stats['extra']} | {stats['borderline']} | {stats['min_iou']} | "
                f"{stats['max_conf_diff']} | {'yes' if stats['ok'] else 'NO'} |"
            )
        self.result["accuracy"] = out
