"""A cohort's training step captured once as a CUDA graph and replayed for every full batch.

On a GPU a batch-64 step of K small networks is microseconds of arithmetic behind hundreds of
kernel launches (gather, forward, loss, backward, the vectorised update's ops per parameter).
A replay is one launch. What changes between steps lives in static tensors the graph reads:
the batch's image indices and each member's learning rate and momentum (copied in before each
replay); the step count the update needs is a device tensor it increments itself.

torch's recipe for whole-network capture (CUDA semantics, "CUDA Graphs"): a few eager warm-up
steps on a side stream, gradients set to None before capture so that backward allocates them
inside the graph's pool (and replays overwrite rather than accumulate them), and autocast's
cast cache off. The warm-up steps are real steps of the epoch; capture records and runs
nothing. Any change of the members (one leaves or joins) changes the shapes and the tensors
the graph points at, so the cohort drops its graph and captures a new one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch's recipe does

# (indices [K, b], lr [K], momentum [K], loss sums [K], correct counts [K]) -> None
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]


@dataclass
class CapturedStep:
    """A graph of one step and the static tensors it reads and accumulates into."""

    graph: torch.cuda.CUDAGraph
    indices: torch.Tensor  # [K, b] long: the batch's image indices, per member
    lr: torch.Tensor  # [K] float64
    momentum: torch.Tensor  # [K] float64
    loss_sum: torch.Tensor  # [K] float64: the epoch's summed losses over replays
    correct: torch.Tensor  # [K] int64

    @classmethod
    def capture(cls, step: Step, *, members: int, batch_size: int,
                device: torch.device, before: Callable[[], None]) -> CapturedStep:
        """Record STEP over fresh static tensors. BEFORE runs first (drop the gradients)."""
        captured = cls(
            graph=torch.cuda.CUDAGraph(),
            indices=torch.zeros((members, batch_size), dtype=torch.long, device=device),
            lr=torch.zeros(members, dtype=torch.float64, device=device),
            momentum=torch.zeros(members, dtype=torch.float64, device=device),
            loss_sum=torch.zeros(members, dtype=torch.float64, device=device),
            correct=torch.zeros(members, dtype=torch.int64, device=device))
        before()
        # On DEVICE, whichever GPU is current: the capture stream and the graph's memory
        # pool belong to the device the members train on.
        with torch.cuda.device(device), torch.cuda.graph(captured.graph):
            step(captured.indices, captured.lr, captured.momentum, captured.loss_sum,
                 captured.correct)
        return captured

    def replay(self, indices: torch.Tensor, lr: torch.Tensor, momentum: torch.Tensor) -> None:
        """One step: the batch's indices and the step's rows of the epoch's rate tables
        (device tensors: copies on the device, none from the host), then the graph."""
        self.indices.copy_(indices)
        self.lr.copy_(lr)
        self.momentum.copy_(momentum)
        self.graph.replay()

    def new_epoch(self) -> None:
        self.loss_sum.zero_()
        self.correct.zero_()


def on_side_stream(step: Callable[[], None], device: torch.device) -> None:
    """Run STEP eagerly on a side stream of DEVICE, as torch's recipe warms up before capture
    (lazy initialisation and autotuning must not happen on the stream being captured)."""
    main = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device=device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        step()
    main.wait_stream(side)
