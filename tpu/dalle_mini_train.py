#!/usr/bin/env python3
"""Runs dalle-mini's tools/train/train.py, unchanged, as a minidalle command stage.

    python3 tpu/dalle_mini_train.py PATH/TO/tools/train/train.py [train.py arguments] [--resume_from CHECKPOINT]

train.py reports through `wandb`: metrics with `wandb.log({..., "train/step": N})` on process 0, and, after
each save of `--output_dir` (model, tokenizer and opt_state.msgpack), `wandb.log({"time/save_model": …})`.
This wrapper puts a stand-in `wandb` module in front of train.py (wrapping the real one when it is installed,
replacing it when it is not) that turns those calls into the command plugin's JSON lines on stdout:

    {"step": N, "train/loss": …, …}          one line per step (the calls of one step merged)
    {"checkpoint": "<output_dir>", "step": N} after each save; the plugin copies the directory into the run

train.py resumes only from a W&B artifact (`--model_name_or_path …/model-ID:vN --restore_state True`: the
parameters, the optimizer state, and step/epoch/time/samples from the artifact's metadata). On a retry the
plugin appends `--resume_from <checkpoint>`; the wrapper then gives train.py an artifact name that its
stand-in `wandb.run.use_artifact` (and `wandb.Api().artifact`) serves from that directory, with the metadata
the wrapper wrote beside the checkpoint (minidalle-train-state.json). Everything else goes to the real wandb
when it is installed (WANDB_MODE decides whether it syncs).
"""

import importlib
import importlib.util
import json
import math
import os
import runpy
import shutil
import signal
import sys
import types
import uuid

STATE_FILE = "minidalle-train-state.json"
# The artifact names train.py is given when it resumes: `/model-` is what its ModelArguments insists on.
RESUME_MODEL = "minidalle-checkpoint/model-resume:latest"
RESUME_STATE = "minidalle-checkpoint/state-resume:latest"
STATE_KEYS = {"train/step": "step", "train/epoch": "epoch", "train/time": "train_time", "train/samples": "train_samples"}


def fail(message):
    sys.stderr.write(f"dalle_mini_train.py: {message}\n")
    sys.exit(2)


def take_option(args, name):
    """Removes `--name value` / `--name=value` from args; returns the value (last one wins) or None."""
    value, out, i = None, [], 0
    while i < len(args):
        a = args[i]
        if a == name:
            if i + 1 >= len(args):
                fail(f"{name} needs a value")
            value = args[i + 1]
            i += 2
            continue
        if a.startswith(name + "="):
            value = a[len(name) + 1 :]
        else:
            out.append(a)
        i += 1
    args[:] = out
    return value


def option(args, name, default=None):
    copy = list(args)
    v = take_option(copy, name)
    return default if v is None else v


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def number(v):
    """A plain float from an int/float/numpy/jax scalar, or None (histograms, strings, arrays, booleans)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    size = getattr(v, "size", None)
    if size == 1 and hasattr(v, "item"):
        try:
            return number(v.item())
        except Exception:  # a device array that cannot be fetched
            return None
    return None


def flatten(data, prefix=""):
    for k, v in data.items():
        key = f"{prefix}{k}" if not prefix or prefix.endswith("/") else f"{prefix}/{k}"
        if isinstance(v, dict) or (hasattr(v, "items") and not hasattr(v, "shape")):
            yield from flatten(dict(v.items()), key if key.endswith("/") else key + "/")
        else:
            yield key.rstrip("/"), v


class Bridge:
    """Turns train.py's wandb.log calls into JSON lines; knows the checkpoint to resume from.

    One history line per step: the calls of a step are merged and written when the step changes (or at the
    end). A save is moved aside at once (a rename: train.py writes output_dir afresh at its next save) into
    `.tmp-dalle-mini-saves/step-N` beside output_dir, and announced after that step's metrics line, so the
    history holds every step up to a checkpoint before the checkpoint exists (a retry cuts it back to there).
    The announcement gives the directory away ("move": the plugin renames it into the run's checkpoints, no
    copy). `.tmp-*` names are never copied back from a remote host while they exist.
    """

    def __init__(self, output_dir, resume_dir):
        self.output_dir = os.path.abspath(output_dir) if output_dir and not output_dir.startswith("gs://") else None
        self.saves_dir = os.path.join(os.path.dirname(self.output_dir), ".tmp-dalle-mini-saves") if self.output_dir else None
        self.resume_dir = resume_dir
        self.step = None
        self.metrics = {}
        self.state = {}
        self.pending = None  # (step, directory) of a save not announced yet
        self.warned = set()
        if output_dir and output_dir.startswith("gs://"):
            sys.stderr.write("dalle_mini_train.py: --output_dir is a gs:// path: checkpoints are not copied into the run, so a retry cannot resume (use a local --output_dir)\n")

    def flush(self):
        if self.step is not None and self.metrics:
            emit({"step": self.step, **self.metrics})
        self.metrics = {}
        if self.pending is not None:
            step, directory = self.pending
            self.pending = None
            # output_dir itself stays (the stage's declared output): copied; a set-aside save: moved
            emit({"checkpoint": directory, "step": step, **({} if directory == self.output_dir else {"move": True})})

    def log(self, data):
        step = number(data.get("train/step"))
        if step is not None and int(step) != self.step:
            self.flush()
            self.step = int(step)
        for k, v in data.items():
            if k in STATE_KEYS and number(v) is not None:
                self.state[STATE_KEYS[k]] = number(v)
        for key, v in flatten({k: v for k, v in data.items() if k != "train/step"}):
            x = number(v)
            if x is None:
                continue
            if not math.isfinite(x):
                if key not in self.warned:
                    sys.stderr.write(f"dalle_mini_train.py: {key} is {x} at step {self.step} (not a number: left out of the history)\n")
                    self.warned.add(key)
                continue
            self.metrics[key] = x
        if "time/save_model" in data:
            self.saved()

    def saved(self):
        """train.py has just written output_dir: set it aside with its step counters, to announce later."""
        if self.output_dir is None or not os.path.isdir(self.output_dir):
            return
        state = {"step": int(self.state.get("step", self.step or 0)), "epoch": int(self.state.get("epoch", 0))}
        state["train_time"] = self.state.get("train_time", 0.0)
        state["train_samples"] = int(self.state.get("train_samples", 0))
        with open(os.path.join(self.output_dir, STATE_FILE), "w") as f:
            json.dump(state, f)
        target = os.path.join(self.saves_dir, f"step-{state['step']}")
        os.makedirs(self.saves_dir, exist_ok=True)
        if os.path.exists(target):  # a second save of the same step (the end of an epoch): the newer one counts
            shutil.rmtree(target)
        os.rename(self.output_dir, target)
        self.pending = (state["step"], target)

    def artifact(self, name):
        """The local checkpoint behind one of the resume artifact names, or None for any other name."""
        if name not in (RESUME_MODEL, RESUME_STATE) or self.resume_dir is None:
            return None
        return LocalArtifact(name, self.resume_dir)

    def finish(self):
        """The end (also a failure or SIGTERM): the last step's line, the last save announced, output_dir back."""
        if self.output_dir is not None and self.pending is not None and not os.path.exists(self.output_dir):
            step, directory = self.pending
            os.rename(directory, self.output_dir)
            self.pending = (step, self.output_dir)
        self.flush()
        if self.saves_dir:
            try:
                os.rmdir(self.saves_dir)  # empty once the plugin has moved every save; otherwise left for it
            except OSError:
                pass


class LocalArtifact:
    """What train.py and dalle-mini's from_pretrained use of a W&B artifact: metadata and download()."""

    def __init__(self, name, directory):
        self.name = name
        self.directory = directory
        with open(os.path.join(directory, STATE_FILE)) as f:
            self.metadata = json.load(f)

    def download(self, root=None):
        return self.directory


def stand_in(bridge, real):
    """A `wandb` module: the real one with log/init/run/Api wrapped, or a minimal offline one."""
    mod = types.ModuleType("wandb")
    mod.__doc__ = "minidalle's wandb stand-in for dalle-mini's train.py"
    state = {"run": None}

    class Run:
        def __init__(self, inner):
            self._inner = inner
            self.id = getattr(inner, "id", None) or os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]
            self.config = inner.config if inner is not None else Config()

        def use_artifact(self, name, *a, **kw):
            local = bridge.artifact(name)
            if local is not None:
                return local
            if self._inner is None:
                fail(f"train.py asks for the W&B artifact {name!r}, but wandb is not installed")
            return self._inner.use_artifact(name, *a, **kw)

        def log_artifact(self, artifact, *a, **kw):
            if self._inner is not None:
                return self._inner.log_artifact(artifact, *a, **kw)
            return None

        def __getattr__(self, name):
            if self._inner is None:
                raise AttributeError(f"wandb.run.{name}: wandb is not installed (minidalle's stand-in has id, config, use_artifact, log_artifact)")
            return getattr(self._inner, name)

    class Config(dict):
        def update(self, values=None, **kw):
            super().update(values or {}, **kw)

        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    class Api:
        # the real Api is made only when something other than a resume artifact is asked for: it needs a
        # W&B login, which an offline run (or a worker > 0 of a slice) may not have
        def __init__(self, *a, **kw):
            self._args = (a, kw)
            self._inner = None

        def _real(self):
            if real is None:
                return None
            if self._inner is None:
                self._inner = real.Api(*self._args[0], **self._args[1])
            return self._inner

        def artifact(self, name, *a, **kw):
            local = bridge.artifact(name)
            if local is not None:
                return local
            if self._real() is None:
                fail(f"train.py asks for the W&B artifact {name!r}, but wandb is not installed")
            return self._real().artifact(name, *a, **kw)

        def __getattr__(self, name):
            if self._real() is None:
                raise AttributeError(f"wandb.Api().{name}: wandb is not installed")
            return getattr(self._real(), name)

    def init(*a, **kw):
        inner = real.init(*a, **kw) if real is not None else None
        state["run"] = Run(inner)
        return state["run"]

    def log(data, *a, **kw):
        bridge.log(data)
        if real is not None:
            real.log(data, *a, **kw)

    def finish(*a, **kw):
        bridge.finish()
        if real is not None:
            real.finish(*a, **kw)

    mod.init, mod.log, mod.finish, mod.Api = init, log, finish, Api
    if real is not None:
        for attr in ("__path__", "__spec__", "__file__", "__version__"):
            if hasattr(real, attr):
                setattr(mod, attr, getattr(real, attr))
    else:
        mod.__version__ = "0 (not installed: minidalle's stand-in)"
        mod.define_metric = lambda *a, **kw: None
        mod.config = Config()

        class Artifact:
            def __init__(self, name, type, metadata=None, **kw):
                self.name, self.type, self.metadata = name, type, metadata or {}

            def add_file(self, *a, **kw):
                pass

            def add_reference(self, *a, **kw):
                pass

        class Histogram:
            def __init__(self, *a, **kw):
                pass

        mod.Artifact, mod.Histogram = Artifact, Histogram

    def module_getattr(name):
        if name == "run":
            return state["run"]
        if name == "config" and state["run"] is not None:
            return state["run"].config
        if real is not None:
            return getattr(real, name)
        raise AttributeError(f"wandb.{name}: wandb is not installed (pip install wandb), and minidalle's stand-in does not provide it")

    mod.__getattr__ = module_getattr
    return mod


def main(argv):
    if len(argv) < 1 or not argv[0].endswith(".py"):
        fail("usage: dalle_mini_train.py PATH/TO/tools/train/train.py [train.py arguments] [--resume_from CHECKPOINT]")
    train_py, args = os.path.abspath(argv[0]), list(argv[1:])
    if not os.path.isfile(train_py):
        fail(f"{train_py} does not exist (clone dalle-mini: tpu/setup.sh does)")
    resume_dir = take_option(args, "--resume_from")
    output_dir = option(args, "--output_dir")
    # train.py saves its step counters only where wandb.log was last called with them (every logging_steps):
    # a save between two logging steps would be labelled with an older step.
    logging_steps, save_steps = int(option(args, "--logging_steps", "40")), int(option(args, "--save_steps", "4000"))
    if save_steps % logging_steps != 0:
        fail(f"--save_steps ({save_steps}) must be a multiple of --logging_steps ({logging_steps}), so each checkpoint knows its step")
    if resume_dir is not None:
        resume_dir = os.path.abspath(resume_dir)
        for f in (STATE_FILE, "opt_state.msgpack", "config.json"):
            if not os.path.isfile(os.path.join(resume_dir, f)):
                fail(f"cannot resume from {resume_dir}: {f} is missing (not a checkpoint this wrapper announced)")
        take_option(args, "--model_name_or_path")
        take_option(args, "--restore_state")
        args += ["--model_name_or_path", RESUME_MODEL, "--restore_state", "True"]
        if "--overwrite_output_dir" not in args:
            args.append("--overwrite_output_dir")  # the output dir holds the previous attempt's save
    bridge = Bridge(output_dir, resume_dir)
    real = importlib.import_module("wandb") if importlib.util.find_spec("wandb") is not None else None
    sys.modules["wandb"] = stand_in(bridge, real)
    sys.argv = [train_py, *args]
    sys.path.insert(0, os.path.dirname(train_py))
    # SIGTERM (minidalle stopping the stage) ends train.py through SystemExit, so the last save is still announced
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        runpy.run_path(train_py, run_name="__main__")
    finally:
        bridge.finish()


if __name__ == "__main__":
    main(sys.argv[1:])
