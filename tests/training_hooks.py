"""Test callbacks for training runs, and the command line with them passed in.

`train.train` and `cv.cross_validate` take extra Keras callbacks; these are the
tests' own: `KillAfterEpoch` kills the process at a known point (after that
epoch's backup and files are written), `DumpWeights` saves a process's final
weights. Run as a script, this module is `cli.py` with those callbacks handed to
every training the command starts:

    python tests/training_hooks.py [--kill-after-epoch N] [--dump-weights DIR] -- train ...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from pneumokeras.utils import environment

environment.import_tensorflow_quietly()  # its start-up lines would bury the CLI's output

import keras  # noqa: E402
import numpy as np  # noqa: E402


class KillAfterEpoch(keras.callbacks.Callback):
    """SIGKILLs this process at the end of the 1-based epoch `epoch`."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class DumpWeights(keras.callbacks.Callback):
    """Saves the model's weights at the end of training as `folder/process-<index>.npz`."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = Path(folder)

    def on_train_end(self, logs=None):
        from pneumokeras.training import distributed

        weights = {f"w{i:04d}": np.asarray(w.value) for i, w in enumerate(self.model.weights)}
        np.savez(self.folder / f"process-{distributed.process_index()}.npz", **weights)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-after-epoch", type=int, default=None)
    parser.add_argument("--dump-weights", default=None)
    parser.add_argument("cli", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    callbacks = []
    if args.kill_after_epoch:
        callbacks.append(KillAfterEpoch(args.kill_after_epoch))
    if args.dump_weights:
        callbacks.append(DumpWeights(Path(args.dump_weights)))

    from pneumokeras.cli import main as cli_main
    from pneumokeras.training import train

    # Every training the command starts gets the callbacks (cv calls train per fold),
    # after any the caller passes itself.
    original = train.train

    def train_with_hooks(*args, **kwargs):
        given = kwargs.pop("callbacks", ())
        return original(*args, callbacks=[*given, *callbacks], **kwargs)

    train.train = train_with_hooks
    cli_args = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    cli_main(cli_args, prog_name="cli.py")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
