"""Precomputing a slide's tissue windows with the real MobileSAM into the disk store, in-process and
through `slidesam-server precompute`: background skipped, damaged files re-encoded, SIGKILL resumes
byte-identically, bad input refused with nothing lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from slidesam.server.cli import build_parser
from slidesam.server.engine.embedding_store import EmbeddingStore
from slidesam.server.engine.window_grid import WindowGrid, WindowIndex
from slidesam.server.engine.precompute import open_slide, precompute, read_thumbnail, store_key, tissue_mask, tissue_windows
from slidesam.server.slides.regions import Resolution
from slidesam.lab.synthetic.tissue_slide import write_tissue_slide

REPO = Path(__file__).resolve().parents[2]
SLIDE_ID = "cases/tissue.svs"
X10 = Resolution("magnification", 10)  # the slide is x20: downsample 2, a 3 x 2 grid
TISSUE = [WindowIndex(0, 0), WindowIndex(1, 0), WindowIndex(0, 1), WindowIndex(1, 1)]


@pytest.fixture(scope="module")
def tissue_root(tmp_path_factory) -> Path:
    """A 5120 x 3584 x20 slide: tissue over the left half (4 windows at x10), glass with a speck of dust on the right."""
    root = tmp_path_factory.mktemp("tissue-slides")
    (root / "cases").mkdir()
    write_tissue_slide(root / SLIDE_ID)
    return root


@pytest.fixture(scope="module")
def reference(tissue_root, model_registry, tmp_path_factory):
    """An uninterrupted precompute (batch 1, float32 to compare with fresh encodes) and its store's files."""
    store = EmbeddingStore(tmp_path_factory.mktemp("reference") / "store", 1 << 30)
    report = _precompute(store, model_registry, tissue_root)
    return report, store, _files(store.root)


def _precompute(store: EmbeddingStore, registry, slide_root: Path):
    return precompute([SLIDE_ID], registry, "mobile_sam", X10, store, batch_size=1, slide_root=slide_root,
                      dtype=torch.float32, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _refused(capsys, *args: str) -> tuple[int, str]:
    """Runs `slidesam-server precompute ARGS` in this process (refusals come before any model work):
    the exit code and what it wrote on stderr."""
    from slidesam.server.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["precompute", *args])
    return exit_.value.code, capsys.readouterr().err


def test_tissue_windows_skip_glass_and_dust(tissue_root):
    source = open_slide(SLIDE_ID, tissue_root)
    grid = WindowGrid(source.bounds, 2.0)
    assert (grid.columns, grid.rows) == (3, 2)
    assert tissue_windows(source, grid) == TISSUE  # the right column holds only glass and a speck of dust
    thumbnail = read_thumbnail(source, 32.0)
    speck = (slice(1000 // 32 - 2, 1000 // 32 + 3), slice(4400 // 32 - 2, 4400 // 32 + 3))
    assert tissue_mask(thumbnail)[speck].any() and not tissue_mask(thumbnail, 20)[speck].any()
    assert tissue_mask(thumbnail, 20)[:, : 2700 // 32].mean() > 0.5


def test_precompute_encodes_the_tissue_windows_and_a_rerun_encodes_nothing(reference, tissue_root, model_registry):
    report, store, files = reference
    slide = report.slides[0]
    assert (slide.windows, slide.tissue, slide.background, slide.encoded, slide.written, slide.present) == (6, 4, 2, 4, 4, 0)
    assert report.windows_per_second > 0 and report.batch_size == 1
    assert sorted(name.rsplit("/", 1)[1] for name in files if name.endswith(".emb")) == sorted(
        f"c{i.column}_r{i.row}.emb" for i in TISSUE
    )
    again = _precompute(store, model_registry, tissue_root)
    assert (again.encoded, again.slides[0].present) == (0, 4)
    assert _files(store.root) == files


def test_encode_many_matches_single_encodes(reference, tissue_root, model_registry):
    _, store, _ = reference  # holds single-window encodes
    spec, model = model_registry.get("mobile_sam")
    source = open_slide(SLIDE_ID, tissue_root)
    grid = WindowGrid(source.bounds, 2.0)
    images = [source.read_region(grid.window(index), 2.0).pixels for index in TISSUE[:2]]
    batched = model.encode_many(images)
    for index, together in zip(TISSUE[:2], batched):
        alone = store.get(store_key(spec, source, grid, index))
        assert together.features.shape == (1, 256, 64, 64)
        assert (together.input_size, together.original_size) == (alone.input_size, alone.original_size) == ((1024, 1024), (1024, 1024))
        assert torch.allclose(together.features.cpu(), alone.features, atol=1e-4)
        assert together.features.untyped_storage().nbytes() == together.nbytes  # its own memory, not the batch's
    assert not torch.allclose(batched[0].features, batched[1].features, atol=1e-2)


def test_encode_many_batches_a_sam_vit_encoder_too():
    """A tiny randomly initialised SAM ViT (the real architecture): batched rows equal single encodes,
    for images of different sizes (each padded to the encoder's square)."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    from slidesam.server.models.sam import SamModel

    torch.manual_seed(0)
    encoder = ImageEncoderViT(
        img_size=256, patch_size=16, embed_dim=64, depth=2, num_heads=2, out_chans=32, qkv_bias=True, use_rel_pos=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), window_size=4, global_attn_indexes=(1,),
    )
    decoder = MaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2))
    model = SamModel(Sam(encoder, PromptEncoder(32, (16, 16), (256, 256), 16), decoder), torch.device("cpu"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 200, 3), dtype=np.uint8), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)]
    for image, together in zip(images, model.encode_many(images)):
        alone = model.encode(image)
        assert (together.input_size, together.original_size) == (alone.input_size, alone.original_size)
        assert torch.allclose(together.features, alone.features, atol=1e-5)


def _break_four_ways(root: Path) -> None:
    """Flip a payload byte, truncate, garble a header, and copy one window's file into another's place."""
    paths = {p.name: p for p in root.rglob("*.emb")}
    shutil.copyfile(paths["c0_r1.emb"], paths["c1_r1.emb"])  # a foreign file: window (0, 1) in (1, 1)'s place
    payload = bytearray(paths["c0_r0.emb"].read_bytes())
    payload[-7] ^= 0x10
    paths["c0_r0.emb"].write_bytes(bytes(payload))
    paths["c1_r0.emb"].write_bytes(paths["c1_r0.emb"].read_bytes()[:-1000])
    header = paths["c0_r1.emb"].read_bytes()
    paths["c0_r1.emb"].write_bytes(header.replace(b'"dtype"', b'"dtyp"', 1))


def test_damaged_and_foreign_files_are_refused_and_encoded_again(reference, tissue_root, model_registry, tmp_path, caplog):
    _, store, files = reference
    root = tmp_path / "store"
    shutil.copytree(store.root, root)
    _break_four_ways(root)
    assert _files(root) != files
    damaged = EmbeddingStore(root, 1 << 30)
    with caplog.at_level("WARNING", logger="slidesam.server.engine.embedding_store"):
        report = _precompute(damaged, model_registry, tissue_root)
    assert report.encoded == 4 and damaged.stats().refused == 4
    for reason in ("does not match the SHA-256", "truncated", "header is not valid", "holds window [0, 1], not the [1, 1] asked for"):
        assert reason in caplog.text
    assert _files(root) == files  # encoded again, byte for byte as before


def test_precompute_resumes_after_sigkill_with_a_byte_identical_store(reference, tissue_root, tmp_path, capsys):
    _, _, files = reference
    store = tmp_path / "store"
    args = [SLIDE_ID, "--slide-root", str(tissue_root), "--magnification", "10", "--store", str(store), "--batch-size", "1",
            "--dtype", "float32"]
    process = subprocess.Popen([sys.executable, "-m", "slidesam.server.cli", "precompute", *args], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(store.rglob("*.emb")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    interrupted = len(list(store.rglob("*.emb")))
    assert 1 <= interrupted < 4
    from slidesam.server.cli import main

    capsys.readouterr()
    main(["precompute", *args])  # the resumed run in this process: one torch import fewer, the same command
    resumed = capsys.readouterr().out
    assert resumed.startswith(f"{4 - interrupted} windows encoded"), resumed
    assert f"{interrupted} already present" in resumed
    assert _files(store) == files


def test_precompute_help_explains_the_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["precompute", "--help"])
    assert stopped.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--magnification", "--store-gb", "tissue", "resumes", "evicting the least recently used"):
        assert words in text


@pytest.fixture
def bad_input(tissue_root, reference, tmp_path):
    """Slides that are not slides, and a store whose contents must survive every refusal."""
    text = tissue_root / "cases" / "notes.svs"
    text.write_text("this is not a slide\n")
    data = (tissue_root / SLIDE_ID).read_bytes()
    scrambled, noise = bytearray(data), np.random.default_rng(0)
    with tifffile.TiffFile(tissue_root / SLIDE_ID) as tiff:  # the tiles of level 0 and of the smallest level
        for page in (tiff.pages[0], tiff.pages[-1]):
            start, end = page.dataoffsets[0], page.dataoffsets[-1] + page.databytecounts[-1]
            scrambled[start:end] = noise.integers(0, 256, end - start, dtype=np.uint8).tobytes()
    (tissue_root / "cases" / "garbled.svs").write_bytes(bytes(scrambled))
    store = tmp_path / "store"
    shutil.copytree(reference[1].root, store)
    return store


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["cases/notes.svs"], "not a slide OpenSlide can read"),
        (["cases/garbled.svs"], "the slide file is damaged"),
        ([SLIDE_ID, "--downsample", "0.1"], "downsample 0.1 is 10x finer than the slide's full resolution (at most 4x)"),
        ([SLIDE_ID, "--store-gb", "0"], "--store-gb must be a positive number of GiB"),
    ],
)
def test_bad_input_gets_one_clear_line_and_exit_code_2_and_the_store_keeps_everything(bad_input, tissue_root, arguments, message, capsys):
    before = _files(bad_input)
    resolution = [] if "--downsample" in arguments else ["--magnification", "10"]
    code, stderr = _refused(capsys, *arguments, "--slide-root", str(tissue_root), "--store", str(bad_input), *resolution)
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("slidesam-server: ") and message in last, stderr
    assert "Traceback" not in stderr
    assert _files(bad_input) == before


def test_bad_stores_are_refused_and_left_alone(tissue_root, tmp_path, capsys):
    a_file = tmp_path / "store.bin"
    a_file.write_bytes(b"precious")
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "store.json").write_text('{"format": "slidesam-embedding-store", "format_version": 2}\n')
    for store, message in ((a_file, "is a file, not a directory"), (newer, "has format version 2; this slidesam writes version 1")):
        before = _files(tmp_path)
        code, stderr = _refused(capsys, SLIDE_ID, "--slide-root", str(tissue_root), "--magnification", "10", "--store", str(store))
        assert code == 2 and message in stderr.strip().splitlines()[-1], stderr
        assert _files(tmp_path) == before
    code, stderr = _refused(capsys, str(tmp_path / "nowhere.svs"), "--magnification", "10", "--store", str(tmp_path / "s"))
    assert code == 2 and f"no such slide file: {tmp_path / 'nowhere.svs'}" in stderr
