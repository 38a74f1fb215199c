"""The HDF5 attention store: round trips, named dimensions, the background writer, crash safety."""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from numina.store import (
    AttentionStoreWriter,
    CoordinateError,
    DamagedStoreError,
    IncompleteStoreError,
    NamedArray,
    StoreError,
    StoreWriteError,
    TruncatedStoreError,
    measure_write_throughput,
    open_store,
)

REPO = Path(__file__).resolve().parents[1]

CROSS = {
    "step": list(range(6)),
    "branch": ["cond", "uncond"],
    "layer": list(range(4)),
    "head": list(range(3)),
    "token": [3, 4, 7],
    "frame": list(range(2)),
    "y": list(range(5)),
    "x": list(range(6)),
    "stat": ["entropy", "top5", "peak_mean"],
}
PROBS_DIMS = ("step", "branch", "layer", "head", "token", "frame", "y", "x")
STATS_DIMS = ("step", "branch", "layer", "head", "token", "frame", "stat")
SELF = {
    "step": list(range(6)),
    "branch": ["cond"],
    "layer": list(range(4)),
    "head": list(range(3)),
    "frame": list(range(2)),
    "y": list(range(5)),
    "x": list(range(6)),
    "component": [0, 1, 2],
    "term": ["S1", "S2", "S3", "S"],
}


def declare(writer: AttentionStoreWriter) -> None:
    """The layout the capture layer uses, at toy sizes."""
    writer.create_group("cross_attention", CROSS)
    writer.create_dataset(
        "cross_attention/probs", PROBS_DIMS, chunk_dims=("step", "branch", "layer", "head", "token")
    )
    writer.create_dataset(
        "cross_attention/stats", STATS_DIMS, dtype="float32", chunk_dims=("step", "branch", "layer")
    )
    writer.create_group("self_attention", SELF)
    writer.create_dataset(
        "self_attention/components",
        ("step", "branch", "layer", "head", "frame", "y", "x", "component"),
        chunk_dims=("step", "branch", "layer", "head"),
    )
    writer.create_dataset(
        "self_attention/singular_values",
        ("step", "branch", "layer", "head", "frame", "component"),
        chunk_dims=("step", "branch", "layer"),
    )
    writer.create_dataset(
        "self_attention/scores",
        ("step", "branch", "layer", "head", "frame", "term"),
        chunk_dims=("step", "branch", "layer"),
    )


def shape_of(coords: dict, dims: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(len(coords[dim]) for dim in dims)


def write_reference(path: Path) -> np.ndarray:
    """Write cross_attention/probs at a few (step, branch, layer) cells; return the expected array."""
    rng = np.random.default_rng(0)
    expected = np.full(shape_of(CROSS, PROBS_DIMS), np.nan, dtype=np.float16)
    cells = [(0, "cond", 1), (2, "cond", 3), (2, "uncond", 0), (5, "cond", 3)]
    with AttentionStoreWriter(path, attrs={"prompt": "three cats on a sofa"}) as writer:
        declare(writer)
        for step, branch, layer in cells:
            data = rng.random(shape_of(CROSS, PROBS_DIMS[3:]), dtype=np.float32)
            writer.write("cross_attention/probs", {"step": step, "branch": branch, "layer": layer}, data)
            expected[step, CROSS["branch"].index(branch), layer] = data.astype(np.float16)
        one_token = rng.random(shape_of(CROSS, ("frame", "y", "x")))  # float64 in, float16 stored
        writer.write(
            "cross_attention/probs",
            {"step": 4, "branch": "cond", "layer": 2, "head": 1, "token": 7},
            one_token,
        )
        expected[4, 0, 2, 1, 2] = one_token.astype(np.float16)
    return expected


# ---------------------------------------------------------------------------- round trip


def test_round_trip_by_value_and_position(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    expected = write_reference(path)
    assert not Path(str(path) + ".partial").exists()
    with open_store(path) as store:
        assert store.complete
        assert store.groups == ("cross_attention", "self_attention")
        probs = store["cross_attention/probs"]
        assert probs.dims == PROBS_DIMS
        assert probs.shape == expected.shape
        assert probs.dtype == np.float16
        assert probs.coords["branch"].tolist() == ["cond", "uncond"]
        assert probs.coords["token"].tolist() == [3, 4, 7]

        one = probs.sel(step=2, branch="uncond", layer=0)
        assert one.dims == ("head", "token", "frame", "y", "x")
        assert one.scalar_coords == {"step": 2, "branch": "uncond", "layer": 0}
        np.testing.assert_array_equal(one.values, expected[2, 1, 0])
        np.testing.assert_array_equal(
            np.asarray(probs.sel(step=4, branch="cond", layer=2, head=1, token=7)), expected[4, 0, 2, 1, 2]
        )

        # lists keep the dim in the order given (unsorted, repeated), mixed with scalars and isel
        view = probs.sel(step=[5, 2, 0, 2], branch="cond", token=[7, 3]).isel(
            layer=[3, -3], head=slice(None, None, 2)
        )
        assert view.dims == ("step", "layer", "head", "token", "frame", "y", "x")
        assert view.coords["step"].tolist() == [5, 2, 0, 2]
        assert view.coords["layer"].tolist() == [3, 1]
        reference = expected[np.ix_([5, 2, 0, 2], [0], [3, 1], [0, 2], [2, 0])][:, 0]
        np.testing.assert_array_equal(view.values, reference)

        # unwritten entries read as NaN
        assert np.isnan(probs.sel(step=1).values).all()
        assert np.isnan(probs.sel(step=4, branch="cond", layer=2, head=1, token=3).values).all()
        assert np.isnan(store["self_attention/scores"].values).all()
        # a label slice is inclusive, like xarray
        assert probs.sel(layer=slice(1, 3)).coords["layer"].tolist() == [1, 2, 3]


def test_random_selections_match_numpy(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    expected = write_reference(path)
    rng = np.random.default_rng(1)
    with open_store(path) as store:
        probs = store["cross_attention/probs"]
        for _ in range(25):
            keys = []
            for size in expected.shape:
                kind = rng.integers(3)
                if kind == 0:
                    keys.append(int(rng.integers(size)))
                elif kind == 1:
                    keys.append(rng.integers(size, size=int(rng.integers(1, 4))))
                else:
                    keys.append(np.arange(size))
            view = probs.isel(dict(zip(PROBS_DIMS, keys, strict=True)))
            wanted = expected[np.ix_(*[np.atleast_1d(key) for key in keys])]
            wanted = wanted.reshape([len(key) for key in keys if isinstance(key, np.ndarray)])
            np.testing.assert_array_equal(view.values, wanted)
            assert view.shape == wanted.shape


def test_dimension_scales_visible_to_h5py(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    write_reference(path)
    with h5py.File(path, "r") as handle:
        probs = handle["cross_attention/probs"]
        assert [dim.label for dim in probs.dims] == list(PROBS_DIMS)
        for axis, dim in enumerate(PROBS_DIMS):
            assert list(probs.dims[axis].keys()) == [dim]
            scale = probs.dims[axis][0]
            values = (
                scale.asstr()[()].tolist() if h5py.check_string_dtype(scale.dtype) else scale[()].tolist()
            )
            assert values == CROSS[dim]
        assert probs.dtype == np.float16
        assert np.isnan(probs.fillvalue)
        assert probs.chunks == (1, 1, 1, 1, 1, 2, 5, 6)
        assert probs.compression is None
        assert handle["cross_attention/stats"].dtype == np.float32
        assert handle["cross_attention/stats"].chunks == (1, 1, 1, 3, 3, 2, 3)
        assert [dim.label for dim in handle["self_attention/scores"].dims][-1] == "term"
        assert handle["self_attention/term"].asstr()[()].tolist() == ["S1", "S2", "S3", "S"]
        assert handle.attrs["prompt"] == "three cats on a sofa"
        assert handle["_numina/status"][0] == b"complete"


def test_written_lists_index_cells(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    write_reference(path)
    with open_store(path) as store:
        probs = store["cross_attention/probs"]
        assert probs.index_dims == ("step", "branch", "layer", "head", "token")
        step2 = probs.sel(step=2, head=0, token=3).written()
        assert step2 == [{"branch": "cond", "layer": 3}, {"branch": "uncond", "layer": 0}]
        step4 = probs.sel(step=4, branch="cond", layer=2).written()
        assert step4 == [{"head": 1, "token": 7}]
        for cell in probs.written():  # each dict selects a written slice
            assert not np.isnan(probs.sel(**cell).values).any()
        assert probs.sel(step=2, branch="cond", layer=3, head=0, token=4).written() == [{}]
        assert probs.sel(step=1).written() == []
        assert store["self_attention/scores"].written() == []


def test_attrs_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    attrs = {
        "prompt": "three cats",
        "seed": 7,
        "guidance": 5.0,
        "offload": False,
        "config": {"steps": 50, "layers": [10, 15], "nested": {"a": None}},
        "targets": ["cat", "sofa"],
        "shape": np.array([21, 30, 52]),
        "words": np.array(["three", "cats"]),
    }
    with AttentionStoreWriter(path, attrs=attrs) as writer:
        declare(writer)
        writer.set_attrs(before_start="yes")
        writer.write("cross_attention/stats", {"step": 0}, np.zeros(shape_of(CROSS, STATS_DIMS[1:])))
        writer.set_attrs(
            timesteps=[999.0, 980.5], info={"done": True}, seed=8, table=np.arange(4, dtype=np.int32)
        )
    with open_store(path) as store:
        got = store.attrs
    assert (
        got["prompt"] == "three cats"
        and got["seed"] == 8
        and got["guidance"] == 5.0
        and got["offload"] is False
    )
    assert got["config"] == {"steps": 50, "layers": [10, 15], "nested": {"a": None}}
    assert got["targets"] == ["cat", "sofa"]
    np.testing.assert_array_equal(got["shape"], [21, 30, 52])
    assert got["words"].tolist() == ["three", "cats"]
    assert got["before_start"] == "yes"
    assert got["timesteps"] == [999.0, 980.5] and got["info"] == {"done": True}
    assert got["table"].dtype == np.int32 and got["table"].tolist() == [0, 1, 2, 3]
    assert not any(key.startswith("numina_store") for key in got)


def test_clear_errors_for_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    write_reference(path)
    with open_store(path) as store:
        probs = store["cross_attention/probs"]
        with pytest.raises(CoordinateError, match=r"step=9 .*available: 0\.\.5"):
            probs.sel(step=9)
        with pytest.raises(KeyError, match=r"branch='guided'.*'cond', 'uncond'"):
            probs.sel(branch="guided")
        with pytest.raises(KeyError, match=r"no dimension 'steps'.*'step'"):
            probs.sel(steps=1)
        with pytest.raises(KeyError, match="already selected"):
            probs.sel(step=1).sel(step=1)
        with pytest.raises(KeyError, match=r"no dataset 'cross_attention/prob'.*cross_attention/probs"):
            store["cross_attention/prob"]
        with pytest.raises(KeyError, match="datasets: \\['probs', 'stats'\\]"):
            store["cross_attention"]["maps"]
        with pytest.raises(IndexError, match="out of range"):
            probs.isel(layer=4)

    with pytest.raises(FileExistsError, match="overwrite=True"):
        AttentionStoreWriter(path)
    writer = AttentionStoreWriter(tmp_path / "other.h5")
    declare(writer)
    with pytest.raises(KeyError, match="not a coordinate value"):
        writer.write("cross_attention/probs", {"step": 6}, np.zeros(1))
    with pytest.raises(KeyError, match="not a dimension"):
        writer.write("cross_attention/probs", {"steps": 0}, np.zeros(1))
    with pytest.raises(ValueError, match=r"data has shape \(2, 3\).*\('head', 'token', 'frame', 'y', 'x'\)"):
        writer.write("cross_attention/probs", {"step": 0, "branch": "cond", "layer": 0}, np.zeros((2, 3)))
    with pytest.raises(KeyError, match="no group 'attention'"):
        writer.create_dataset("attention/maps", ("step",))
    writer.write("cross_attention/stats", {"step": 0}, np.zeros(shape_of(CROSS, STATS_DIMS[1:])))
    with pytest.raises(StoreError, match="Declare all of them before the first write"):
        writer.create_group("late", {"step": [0]})
    writer.close()


def test_torch_tensors_are_accepted(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, PROBS_DIMS[3:])
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(shape, generator=generator, requires_grad=True)
    with AttentionStoreWriter(path) as writer:
        declare(writer)
        writer.write("cross_attention/probs", {"step": 0, "branch": "cond", "layer": 0}, maps * 1)
        writer.write(
            "cross_attention/probs", {"step": 1, "branch": "cond", "layer": 0}, maps.to(torch.bfloat16)
        )
    with open_store(path) as store:
        probs = store["cross_attention/probs"].sel(branch="cond", layer=0)
        np.testing.assert_array_equal(probs.sel(step=0).values, maps.detach().numpy().astype(np.float16))
        np.testing.assert_array_equal(
            probs.sel(step=1).values, maps.detach().to(torch.bfloat16).float().numpy().astype(np.float16)
        )


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU")
def test_cuda_tensor_is_written_without_synchronising_the_caller(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, PROBS_DIMS[3:])
    side = torch.cuda.Stream()
    with AttentionStoreWriter(path) as writer:
        declare(writer)
        # creates the file, starts the thread, records a first event, and loads the kernels used below
        # (CUDA loads a kernel lazily at its first launch, which synchronises the device)
        warm_up = torch.zeros(shape, device="cuda").add_(1.0)
        writer.write("cross_attention/probs", {"step": 1, "branch": "cond", "layer": 0}, warm_up)
        writer.flush()
        with torch.cuda.stream(side):
            maps = torch.zeros(shape, device="cuda")
            torch.cuda._sleep(2_000_000_000)  # keeps the GPU busy for about a second
            maps.add_(0.5)  # the value only exists once the sleep is over
            began = time.perf_counter()
            writer.write("cross_attention/probs", {"step": 0, "branch": "cond", "layer": 0}, maps)
            call_seconds = time.perf_counter() - began
            gpu_busy = not side.query()
        del maps
        writer.flush()
    assert gpu_busy, "the GPU finished its one-second sleep before write() returned"
    assert call_seconds < 0.1, f"write() took {call_seconds:.3f} s while the GPU was busy"
    with open_store(path) as store:
        # the thread waited for the producer's stream: it copied the final values, not the zeros
        assert (store["cross_attention/probs"].sel(step=0, branch="cond", layer=0).values == 0.5).all()


def test_named_array_from_numpy() -> None:
    data = np.arange(24.0).reshape(2, 3, 4)
    array = NamedArray.from_numpy(data, ("a", "b", "c"), {"b": ["x", "y", "z"]})
    assert array.coords["a"].tolist() == [0, 1]
    np.testing.assert_array_equal(array.sel(b=["z", "x"], a=1).values, data[1, [2, 0]])
    np.testing.assert_array_equal(array.isel(c=-1).values, data[:, :, -1])


def test_to_xarray(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    expected = write_reference(path)
    with open_store(path) as store:
        data = store["cross_attention/probs"].sel(step=2, branch="cond").to_xarray()
    assert data.dims == PROBS_DIMS[2:]
    np.testing.assert_array_equal(data.values, expected[2, 0])


# ---------------------------------------------------------------------------- background writer


class SlowDeviceArray:
    """Stands in for a device tensor: has .shape and .cpu(), converted in the writer thread."""

    def __init__(self, array: np.ndarray, delay: float = 0.0, fail: bool = False, shape=None) -> None:
        self.array, self.delay, self.fail = array, delay, fail
        self.shape = array.shape if shape is None else shape

    def cpu(self) -> np.ndarray:
        time.sleep(self.delay)
        if self.fail:
            raise_device_lost()
        return self.array


def raise_device_lost() -> None:
    raise RuntimeError("device lost")


def test_bounded_queue_blocks_a_fast_producer(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, STATS_DIMS[1:])
    rng = np.random.default_rng(0)
    arrays = [rng.random(shape, dtype=np.float32) for _ in CROSS["step"]]
    with AttentionStoreWriter(path, queue_size=2) as writer:
        declare(writer)
        began = time.perf_counter()
        for step, array in enumerate(arrays):
            writer.write("cross_attention/stats", {"step": step}, SlowDeviceArray(array, delay=0.1))
        producer_seconds = time.perf_counter() - began
        # 6 writes of 0.1 s each, at most 2 queued + 1 in the thread: the producer waited ~0.3 s
        assert producer_seconds > 0.2
        assert writer.stats["wait_seconds"] > 0.2
        writer.flush()
        assert time.perf_counter() - began >= 0.6
    with open_store(path) as store:
        np.testing.assert_array_equal(store["cross_attention/stats"].values, np.stack(arrays))


def test_error_in_writer_thread_surfaces_in_caller(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, STATS_DIMS[1:])
    with pytest.raises(StoreWriteError) as caught, AttentionStoreWriter(path) as writer:
        declare(writer)
        writer.write("cross_attention/stats", {"step": 0}, np.ones(shape))
        writer.write("cross_attention/stats", {"step": 1}, SlowDeviceArray(np.ones(shape), fail=True))
        writer.flush()
    message = str(caught.value)
    assert "write('cross_attention/stats', index={'step': 1})" in message
    assert "RuntimeError: device lost" in message and "attention.h5.partial" in message
    cause = caught.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert "raise_device_lost" in [
        frame.name for frame in __import__("traceback").extract_tb(cause.__traceback__)
    ]
    # the run failed, so the store never became complete
    assert not path.exists()
    with pytest.raises(IncompleteStoreError):
        open_store(path)
    with open_store(path, allow_incomplete=True) as store:
        assert not store.complete
        written = store["cross_attention/stats"].written()
        assert len(written) == 2 * 4 and {cell["step"] for cell in written} == {0}


def test_wrong_shape_found_in_thread_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, STATS_DIMS[1:])
    writer = AttentionStoreWriter(path)
    declare(writer)
    writer.write("cross_attention/stats", {"step": 0}, SlowDeviceArray(np.ones((2, 2)), shape=shape))
    with pytest.raises(StoreWriteError, match=r"converted to shape \(2, 2\)"):
        writer.close()
    assert writer.closed and not path.exists()


def test_a_full_disk_ends_with_the_writers_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No space left: the background writer's StoreWriteError reaches the caller, not the OSError that
    flushing the file raises again while aborting; what was written before stays in the .partial."""
    import errno

    import h5py

    from numina.store import writer as writer_module

    path = tmp_path / "attention.h5"
    shape = shape_of(CROSS, STATS_DIMS[1:])
    writer = AttentionStoreWriter(path)
    declare(writer)
    writer.write("cross_attention/stats", {"step": 0}, np.ones(shape))
    writer.flush()
    full = OSError(errno.ENOSPC, "No space left on device")

    def no_space(*args: object, **kwargs: object) -> None:
        raise full

    monkeypatch.setattr(writer_module, "_write_block", no_space)
    writer.write("cross_attention/stats", {"step": 1}, np.ones(shape))
    monkeypatch.setattr(h5py.File, "flush", no_space)
    with pytest.raises(StoreWriteError, match="No space left on device") as caught:
        writer.close()
    assert caught.value.__cause__ is full and writer.closed
    monkeypatch.undo()
    assert not path.exists()
    with open_store(path, allow_incomplete=True) as store:
        assert {cell["step"] for cell in store["cross_attention/stats"].written()} == {0}


def test_h5py_errors_that_carry_a_system_errno_become_os_errors() -> None:
    """h5py reports a flush that failed for lack of space as a RuntimeError; the store turns it into an
    OSError with that errno (how a script tells a full disk), keeping the original as its cause."""
    import errno

    from numina.store.errors import os_error_of

    wrapped = RuntimeError(
        "Unable to synchronously flush file (file write failed: time = Mon Dec  7 00:18:10 2026\n, "
        "filename = 'a.h5.partial', file descriptor = 8, errno = 28, error message = 'No space left on "
        "device', buf = 0x5558, total write size = 520, bytes this sub-write = 520, offset = 45056)"
    )
    translated = os_error_of(wrapped)
    assert isinstance(translated, OSError) and translated.errno == errno.ENOSPC
    assert translated.__cause__ is wrapped
    plain = RuntimeError("Unable to open object (component not found)")
    assert os_error_of(plain) is plain
    other = ValueError("errno = 28")
    assert os_error_of(other) is other  # only h5py's RuntimeError is read


def test_a_store_that_cannot_fit_is_refused_before_its_file_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDF5 leaves a file whose write failed for lack of space open in a broken state (the process then
    dies on exit), so the writer checks the declared size against the free space before creating it."""
    import errno

    from numina.store import writer as writer_module

    path = tmp_path / "attention.h5"
    writer = AttentionStoreWriter(path)
    declare(writer)
    probs = 6 * 2 * 4 * 3 * 3 * 2 * 5 * 6 * 2  # float16 (step, branch, layer, head, token, frame, y, x)
    stats = 6 * 2 * 4 * 3 * 3 * 2 * 3 * 4  # float32, 3 statistics
    components = 6 * 1 * 4 * 3 * 2 * 5 * 6 * 3 * 2  # float16, cond only, 3 components
    singular_values, scores = 6 * 1 * 4 * 3 * 2 * 3 * 2, 6 * 1 * 4 * 3 * 2 * 4 * 2  # float16
    assert writer.declared_bytes == probs + stats + components + singular_values + scores == 90_144
    usage = shutil.disk_usage(tmp_path)
    free = writer.declared_bytes + writer_module.FREE_SPACE_MARGIN - 1
    monkeypatch.setattr(writer_module.shutil, "disk_usage", lambda _: usage._replace(free=free))
    with pytest.raises(OSError, match=r"needs about [\d.]+ MiB and [\d.]+ MiB are free") as caught:
        writer.write("cross_attention/stats", {"step": 0}, np.ones(shape_of(CROSS, STATS_DIMS[1:])))
    assert caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no file, not even a .partial
    monkeypatch.setattr(writer_module.shutil, "disk_usage", lambda _: usage._replace(free=free + 1))
    writer.write("cross_attention/stats", {"step": 0}, np.ones(shape_of(CROSS, STATS_DIMS[1:])))
    writer.close()  # enough space: the same writer goes on
    assert path.exists()


def test_a_real_full_disk_ends_with_the_stores_error_and_exit_status_1(tmp_path: Path) -> None:
    """On a 256 KiB file system (tmpfs; needs the right to mount, else skipped) a store of 1 MiB ends the
    process with its clear error and status 1, not the segmentation fault HDF5 gave on exit."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256K", "tmpfs", str(disk)]
    mounted = subprocess.run(mount, capture_output=True, text=True) if shutil.which("mount") else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() if mounted else 'no mount'}")
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from numina.store import AttentionStoreWriter
        writer = AttentionStoreWriter(sys.argv[1])
        writer.create_group("g", {"step": list(range(64)), "y": list(range(64)), "x": list(range(64))})
        writer.create_dataset("g/maps", ("step", "y", "x"), dtype="float32", chunk_dims=("step",))
        with writer:
            for step in range(64):
                writer.write("g/maps", {"step": step}, np.ones((64, 64), dtype="float32"))
        """
    )
    try:
        ended = subprocess.run(
            [sys.executable, "-c", script, str(disk / "attention.h5")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        left = sorted(path.name for path in disk.iterdir())
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    assert ended.returncode == 1, ended.stderr
    message = "OSError: [Errno 28] No space left on device for attention.h5: it needs about 2.0 MiB"
    assert message in ended.stderr
    assert left == []


def test_exception_in_with_body_leaves_incomplete_file(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    with pytest.raises(ZeroDivisionError), AttentionStoreWriter(path) as writer:
        declare(writer)
        writer.write("cross_attention/stats", {"step": 3}, np.ones(shape_of(CROSS, STATS_DIMS[1:])))
        _ = 1 / 0
    assert not path.exists() and Path(str(path) + ".partial").exists()
    with open_store(path, allow_incomplete=True) as store:
        assert store["cross_attention/stats"].sel(step=3).values.min() == 1


# ---------------------------------------------------------------------------- crash safety

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from numina.store import AttentionStoreWriter

    path, mode = sys.argv[1], sys.argv[2]
    writer = AttentionStoreWriter(path, attrs={"mode": mode}, flush_interval=None)
    writer.create_group("g", {"step": range(1000), "y": range(16), "x": range(16)})
    writer.create_dataset("g/maps", ("step", "y", "x"), chunk_dims=("step",))
    for step in range(1000 if mode == "loop" else 3):
        writer.write("g/maps", {"step": step}, np.random.default_rng(step).random((16, 16)))
        writer.flush()
        print("wrote", step, flush=True)
        if mode == "live":
            sys.stdin.readline()
    writer.set_attrs(finished=True)
    writer.close()
    print("closed", flush=True)
    """
)


def expected_map(step: int) -> np.ndarray:
    return np.random.default_rng(step).random((16, 16)).astype(np.float16)


class WriterProcess:
    """A writer script in a subprocess, its stdout read line by line with a timeout."""

    def __init__(self, tmp_path: Path, path: Path, mode: str) -> None:
        script = tmp_path / "writer_script.py"
        script.write_text(WRITER_SCRIPT)
        self.process = subprocess.Popen(
            [sys.executable, str(script), str(path), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def read_line(self, timeout: float = 30.0) -> list[str]:
        return self.lines.get(timeout=timeout).split()

    def send_line(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no cleanup, no close()
        self.process.wait()


def test_killed_writer_is_refused_with_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    writer = WriterProcess(tmp_path, path, "loop")
    try:
        for step in range(3):
            assert writer.read_line() == ["wrote", str(step)]
    finally:
        writer.kill()
    assert not path.exists()
    with pytest.raises(IncompleteStoreError) as caught:
        open_store(path)
    message = str(caught.value)
    assert "incomplete" in message and "killed" in message
    assert "re-run" in message and "allow_incomplete=True" in message
    with open_store(path, allow_incomplete=True) as store:
        assert not store.complete
        assert store.attrs["mode"] == "loop"
        maps = store["g/maps"]
        written = [cell["step"] for cell in maps.written()]
        assert written[:3] == [0, 1, 2]
        for step in range(3):
            np.testing.assert_array_equal(maps.sel(step=step).values, expected_map(step))
        assert np.isnan(maps.sel(step=999).values).all()


def test_truncated_file_is_refused_with_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    write_reference(path)
    size = path.stat().st_size
    for keep in (size - 1, size // 2, 100, 5, 0):
        cut = tmp_path / f"cut_{keep}.h5"
        with open(path, "rb") as source, open(cut, "wb") as target:
            target.write(source.read(keep))
        for allow in (False, True):
            with pytest.raises(TruncatedStoreError, match="is cut off") as caught:
                open_store(cut, allow_incomplete=allow)
            assert "copy" in str(caught.value) and "re-run" in str(caught.value)
    copy = tmp_path / "copy.h5"
    shutil.copyfile(path, copy)
    with open_store(copy) as store:
        assert store.complete


def test_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not an hdf5 file" * 100)
    with pytest.raises(StoreError, match="not an HDF5 file"):
        open_store(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["x"] = [1, 2, 3]
    with pytest.raises(StoreError, match="not an attention store"):
        open_store(other)
    with pytest.raises(FileNotFoundError, match="no attention store"):
        open_store(tmp_path / "missing.h5")


def test_live_reading_follows_a_running_writer(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    writer = WriterProcess(tmp_path, path, "live")
    try:
        assert writer.read_line() == ["wrote", "0"]
        with pytest.raises(IncompleteStoreError, match="live=True"):
            open_store(path)
        with open_store(path, live=True) as store:
            maps = store["g/maps"]
            assert not store.complete
            assert maps.written() == [{"step": 0}]
            np.testing.assert_array_equal(maps.sel(step=0).values, expected_map(0))
            assert np.isnan(maps.sel(step=1).values).all()
            for step in (1, 2):
                writer.send_line()
                assert writer.read_line() == ["wrote", str(step)]
                assert [cell["step"] for cell in maps.written()] == list(range(step + 1))
                np.testing.assert_array_equal(maps.sel(step=step).values, expected_map(step))
            writer.send_line()
            assert writer.read_line() == ["closed"]
            assert writer.process.wait(timeout=30) == 0
            assert store.complete
            assert "finished" not in store.attrs
            store.refresh()
            assert store.attrs["finished"] is True
    finally:
        writer.kill()
    with open_store(path) as store:
        np.testing.assert_array_equal(
            store["g/maps"].sel(step=[0, 1, 2]).values, np.stack([expected_map(s) for s in range(3)])
        )


def test_measure_write_throughput(tmp_path: Path) -> None:
    result = measure_write_throughput(tmp_path / "bench.h5", megabytes=2, chunk_shape=(8, 32, 32))
    assert result["writes"] == round(2e6 / (8 * 32 * 32 * 2))
    assert result["mb_per_s"] > 0 and result["file_bytes"] >= 2e6
    assert not (tmp_path / "bench.h5").exists()


def test_chunking_defaults_and_compression(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    with AttentionStoreWriter(path) as writer:
        writer.create_group("g", {"step": range(3), "head": range(40), "y": range(128), "x": range(128)})
        writer.create_dataset("g/default", ("step", "head", "y", "x"))
        writer.create_dataset(
            "g/packed", ("step", "head", "y", "x"), chunk_dims=("step", "head"), compression="gzip"
        )
        for step, head in itertools.product(range(3), range(2)):
            writer.write("g/packed", {"step": step, "head": head}, np.zeros((128, 128)))
    with h5py.File(path, "r") as handle:
        assert handle["g/default"].chunks == (1, 1, 128, 128)  # 40 heads x 32 KiB would pass 1 MiB
        assert handle["g/packed"].compression == "gzip"
    with open_store(path) as store:
        assert store["g/default"].index_dims == ("step", "head")
        assert len(store["g/packed"].written()) == 6
        assert (store["g/packed"].sel(step=2, head=1).values == 0).all()


# ---------------------------------------------------------------------------- damage after writing


def _small_store(path: Path) -> None:
    """One written cell, a JSON run attribute, and an attribute set after writing (in the log)."""
    with AttentionStoreWriter(path, attrs={"config": {"steps": 50}}) as writer:
        declare(writer)
        cell = {"step": 0, "branch": "cond", "layer": 0}
        writer.write("cross_attention/probs", cell, np.ones(shape_of(CROSS, PROBS_DIMS[3:])))
        writer.set_attrs(timesteps=list(range(50)))


def _flip_a_byte(path: Path, dataset: str) -> None:
    """Invert one byte in the middle of the first stored chunk of `dataset`, as a bad disk or copy would."""
    with h5py.File(path, "r") as handle:
        chunk = handle[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as raw:
        raw.seek(chunk.byte_offset + chunk.size // 2)
        byte = raw.read(1)[0]
        raw.seek(-1, os.SEEK_CUR)
        raw.write(bytes([byte ^ 0xFF]))


def test_every_chunked_dataset_carries_a_checksum(tmp_path: Path) -> None:
    path = tmp_path / "attention.h5"
    write_reference(path)
    chunked = []
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: chunked.append(item.fletcher32) if getattr(item, "chunks", None) else None
        )
    assert len(chunked) > 5 and all(chunked)


@pytest.mark.parametrize(
    ("dataset", "read"),
    [
        ("cross_attention/probs", lambda store: store["cross_attention/probs"].values),
        ("_numina/written/cross_attention/probs", lambda store: store["cross_attention/probs"].written()),
        ("_numina/attrs_log", lambda store: store.attrs),
    ],
)
def test_flipped_bytes_inside_a_dataset_raise_the_stores_error(tmp_path: Path, dataset: str, read) -> None:
    path = tmp_path / "attention.h5"
    _small_store(path)
    with open_store(path) as store:
        assert (store["cross_attention/probs"].sel(step=0, branch="cond", layer=0).values == 1).all()
    _flip_a_byte(path, dataset)
    with pytest.raises(DamagedStoreError, match="damaged after writing") as caught, open_store(path) as store:
        read(store)
    assert str(path) in str(caught.value) and "Copy the store again" in str(caught.value)


@pytest.mark.parametrize(
    ("where", "key", "value", "read"),
    [
        ("/", "config", "{not json", lambda store: store.attrs),
        ("/", "numina_store_json_attrs", "[config", lambda store: store.attrs),
        ("cross_attention", "numina_store_coords", None, lambda store: store["cross_attention/probs"]),
        (
            "cross_attention/probs",
            "numina_store_json_attrs",
            "{bad",
            lambda store: store["cross_attention/probs"],
        ),
    ],
)
def test_damaged_metadata_raises_the_stores_error(tmp_path: Path, where: str, key: str, value, read) -> None:
    path = tmp_path / "attention.h5"
    _small_store(path)
    with h5py.File(path, "r+") as handle:
        if value is None:
            del handle[where].attrs[key]
        else:
            handle[where].attrs[key] = value
    with pytest.raises(DamagedStoreError, match="damaged after writing"), open_store(path) as store:
        read(store)
