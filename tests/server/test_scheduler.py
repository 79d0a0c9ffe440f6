"""The model scheduler: priorities, fairness, preemption, back-pressure, deadlines, cancellation,
out-of-memory retry, and decoder batching on the real MobileSAM."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch

from slidesam.server.engine.scheduler import FairQueue, Job, Priority, Scheduler, SchedulerConfig
from slidesam.server.errors import DeadlineExceeded, ResourceExhausted
from slidesam.server.models.preemption import preemption_hook, yield_point
from slidesam.server.models.served import DecodeInput, HostStage, PendingDecode


def run(coroutine):
    return asyncio.run(coroutine)


class Gate:
    """A job that holds the worker until released, so the test can fill the queue behind it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.entered.set()
        assert self.release.wait(10)
        return "gate"


async def _behind_gate(scheduler: Scheduler, jobs: list[tuple[str, Priority, bool]]) -> list[str]:
    """Queues jobs (name, priority, light) while a gate holds the worker, then records the run order."""
    order: list[str] = []
    gate = Gate()
    held = asyncio.ensure_future(scheduler.run(gate, user="gatekeeper"))
    await asyncio.to_thread(gate.entered.wait, 10)
    tasks = [
        asyncio.ensure_future(scheduler.run(lambda name=name: order.append(name), user=name.split(":")[0], priority=priority, light=light))
        for name, priority, light in jobs
    ]
    await asyncio.sleep(0.05)
    gate.release.set()
    await asyncio.gather(held, *tasks)
    return order


def test_interactive_work_runs_before_batch_work_and_users_take_turns():
    scheduler = Scheduler(SchedulerConfig(max_pending=32, max_pending_per_user=8))
    try:
        jobs = [("batcher:1", Priority.BATCH, False), ("batcher:2", Priority.BATCH, False)]
        jobs += [(f"alice:{i}", Priority.INTERACTIVE, True) for i in range(3)]
        jobs += [(f"bob:{i}", Priority.INTERACTIVE, True) for i in range(2)]
        order = run(_behind_gate(scheduler, jobs))
    finally:
        scheduler.shutdown()
    assert order == ["alice:0", "bob:0", "alice:1", "bob:1", "alice:2", "batcher:1", "batcher:2"]


def test_fair_queue_round_robin_and_selective_pop():
    queue = FairQueue()
    loop = asyncio.new_event_loop()
    try:
        def job(user: str, priority: Priority, light: bool = False) -> Job:
            return Job(lambda: None, user, priority, light, False, None, loop, loop.create_future())

        heavy, light = job("a", Priority.BATCH), job("b", Priority.BATCH, light=True)
        for item in (heavy, light, job("c", Priority.INTERACTIVE)):
            queue.push(item)
        assert len(queue) == 3 and queue.pending_of("a") == 1 and queue.depth(Priority.BATCH) == 2
        assert queue.pop(lambda j: j.light) is light
        assert queue.pop().user == "c" and queue.pop() is heavy and queue.pop() is None and len(queue) == 0
    finally:
        loop.close()


def test_batch_encode_pauses_for_a_waiting_click():
    """A long batch job that reaches preemption points lets an interactive job run inside it."""
    scheduler = Scheduler()
    events: list[str] = []
    started = threading.Event()

    def long_encode() -> str:
        started.set()
        for block in range(20):
            time.sleep(0.02)
            events.append(f"block{block}")
            yield_point()
        return "encoded"

    async def scenario():
        batch = asyncio.ensure_future(scheduler.run(long_encode, user="batcher", priority=Priority.BATCH))
        await asyncio.to_thread(started.wait, 10)
        click, queued_ms = await scheduler.run(lambda: events.append("click") or "clicked", user="alice", light=True)
        return (await batch)[0], click, queued_ms

    try:
        encoded, clicked, queued_ms = run(scenario())
    finally:
        scheduler.shutdown()
    assert encoded == "encoded" and clicked == "clicked"
    assert 0 < events.index("click") < len(events) - 1, events
    assert queued_ms < 200


def test_a_click_overtakes_an_interactive_encode_running_inside_a_batch_encode():
    """Nested preemption: batch encode < another user's interactive encode < a click."""
    scheduler = Scheduler()
    events: list[str] = []
    batch_started, open_started = threading.Event(), threading.Event()

    def encode(name: str, started: threading.Event) -> str:
        started.set()
        for block in range(15):
            time.sleep(0.02)
            events.append(f"{name}{block}")
            yield_point()
        return name

    async def scenario():
        batch = asyncio.ensure_future(scheduler.run(lambda: encode("batch", batch_started), user="b", priority=Priority.BATCH))
        await asyncio.to_thread(batch_started.wait, 10)
        opening = asyncio.ensure_future(scheduler.run(lambda: encode("open", open_started), user="o"))
        await asyncio.to_thread(open_started.wait, 10)
        await scheduler.run(lambda: events.append("click"), user="c", light=True)
        await asyncio.gather(batch, opening)

    try:
        run(scenario())
    finally:
        scheduler.shutdown()
    click = events.index("click")
    assert events.index("open0") < click < events.index("open14") < events.index("batch14"), events


def test_full_queue_is_refused_with_a_retry_hint_and_recovers():
    scheduler = Scheduler(SchedulerConfig(max_pending=2, max_pending_per_user=2))

    async def scenario():
        gate = Gate()
        held = asyncio.ensure_future(scheduler.run(gate, user="a"))
        await asyncio.to_thread(gate.entered.wait, 10)
        queued = [asyncio.ensure_future(scheduler.run(lambda: "ok", user=user)) for user in ("a", "b")]
        await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhausted) as refused:
            await scheduler.run(lambda: "too many", user="c")
        gate.release.set()
        await asyncio.gather(held, *queued)
        after, _ = await scheduler.run(lambda: "served", user="c")
        return refused.value, after

    try:
        refused, after = run(scenario())
    finally:
        scheduler.shutdown()
    assert refused.retry_after_s and 0 < refused.retry_after_s <= 30 and "busy" in str(refused)
    assert after == "served"


def test_one_user_cannot_fill_the_queue():
    scheduler = Scheduler(SchedulerConfig(max_pending=10, max_pending_per_user=1))

    async def scenario():
        gate = Gate()
        held = asyncio.ensure_future(scheduler.run(gate, user="other"))
        await asyncio.to_thread(gate.entered.wait, 10)
        first = asyncio.ensure_future(scheduler.run(lambda: 1, user="flooder", priority=Priority.BATCH))
        await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhausted, match="flooder"):
            await scheduler.run(lambda: 2, user="flooder", priority=Priority.BATCH)
        clicked = asyncio.ensure_future(scheduler.run(lambda: 3, user="alice"))
        gate.release.set()
        return [result for result, _ in await asyncio.gather(held, first, clicked)]

    try:
        assert run(scenario()) == ["gate", 1, 3]
    finally:
        scheduler.shutdown()


def test_deadline_and_cancellation_drop_work_even_mid_encode():
    scheduler = Scheduler()
    blocks_run: list[int] = []

    def encode() -> None:
        for block in range(200):
            time.sleep(0.01)
            blocks_run.append(block)
            yield_point()

    async def scenario():
        with pytest.raises(DeadlineExceeded):
            await scheduler.run(encode, user="a", deadline=time.monotonic() + 0.1)
        after_deadline = len(blocks_run)
        task = asyncio.ensure_future(scheduler.run(encode, user="a"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        survivor, _ = await scheduler.run(lambda: "next", user="b")
        return after_deadline, survivor

    try:
        after_deadline, survivor = run(scenario())
    finally:
        scheduler.shutdown()
    assert after_deadline < 50, "the encode should stop at the first preemption point past the deadline"
    assert len(blocks_run) < after_deadline + 100, "the cancelled encode should stop early"
    assert survivor == "next"


def test_expired_job_is_not_started():
    scheduler = Scheduler()
    ran: list[str] = []
    try:
        with pytest.raises(DeadlineExceeded):
            run(scheduler.run(lambda: ran.append("x"), user="a", deadline=time.monotonic() - 1))
    finally:
        scheduler.shutdown()
    assert not ran


def test_cuda_out_of_memory_empties_the_cache_and_retries_once():
    cleared: list[int] = []
    scheduler = Scheduler(on_out_of_memory=lambda: cleared.append(1))
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "fits now"

    def hopeless() -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    try:
        assert run(scheduler.run(flaky, user="a"))[0] == "fits now"
        with pytest.raises(ResourceExhausted, match="out of memory"):
            run(scheduler.run(hopeless, user="a"))
    finally:
        scheduler.shutdown()
    assert len(attempts) == 2 and len(cleared) == 2


def test_waiting_clicks_of_several_users_share_one_decoder_batch(model_registry):
    _, model = model_registry.get("mobile_sam")
    rng = np.random.default_rng(3)
    embeddings = [model.encode(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)) for _ in range(2)]
    prompts = [DecodeInput(embeddings[i % 2], np.array([[40.0 + 20 * i, 60.0]]), np.array([1]), None, None) for i in range(5)]
    sizes: list[int] = []
    scheduler = Scheduler(SchedulerConfig(max_batch=4), observe_batch=sizes.append)

    def pending(item: DecodeInput) -> PendingDecode:
        return PendingDecode(model, item, lambda candidates, decode_ms: candidates)

    async def scenario():
        gate = Gate()
        held = asyncio.ensure_future(scheduler.run(gate, user="gate"))
        await asyncio.to_thread(gate.entered.wait, 10)
        tasks = [
            asyncio.ensure_future(scheduler.run(lambda item=item: pending(item), user=f"user{i}", light=True, batchable=True))
            for i, item in enumerate(prompts)
        ]
        await asyncio.sleep(0.05)
        gate.release.set()
        await held
        return [result for result, _ in await asyncio.gather(*tasks)]

    try:
        batched = run(scenario())
    finally:
        scheduler.shutdown()
    assert sizes == [4, 1]
    for item, candidates in zip(prompts, batched):
        alone = model.candidates(item.embedding, item.points, item.labels, item.box, item.previous_logits)
        torch.testing.assert_close(candidates.logits, alone.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(candidates.scores, alone.scores, atol=1e-5, rtol=1e-5)


def test_stepped_encode_is_exactly_the_encoder_and_pauses_between_blocks(model_registry):
    _, model = model_registry.get("mobile_sam")
    image = np.random.default_rng(5).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    pauses: list[float] = []
    with preemption_hook(lambda: pauses.append(time.perf_counter())):
        stepped = model.encode(image)
    resized = model._resize.apply_image(image)
    with torch.inference_mode():
        tensor = torch.as_tensor(resized, device=model.device).permute(2, 0, 1).contiguous()[None]
        whole = model.sam.image_encoder(model.sam.preprocess(tensor))
    assert torch.equal(stepped.features, whole)
    assert len(pauses) >= 12, "MobileSAM's TinyViT has 12 blocks (and 2 MBConv with inner pauses)"


def test_stepped_encode_of_a_sam_vit_encoder():
    from segment_anything.modeling.image_encoder import ImageEncoderViT

    from slidesam.server.models.encoder_steps import encode_in_steps

    torch.manual_seed(0)
    encoder = ImageEncoderViT(img_size=64, patch_size=16, embed_dim=32, depth=3, num_heads=2, out_chans=16, window_size=2,
                              global_attn_indexes=(1,)).eval()
    pixels = torch.randn(1, 3, 64, 64)
    pauses: list[int] = []
    with torch.inference_mode(), preemption_hook(lambda: pauses.append(1)):
        stepped = encode_in_steps(encoder, pixels)
        whole = encoder(pixels)
    assert torch.equal(stepped, whole) and len(pauses) == 3


def test_fp16_cache_storage_halves_the_bytes_and_keeps_the_mask(model_registry):
    _, model = model_registry.get("mobile_sam")
    image = np.random.default_rng(9).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    full = model.encode(image)
    half = full.with_dtype(torch.float16)
    assert half.nbytes * 2 == full.nbytes
    point, label = np.array([[128.0, 128.0]]), np.array([1])
    mask_full = model.upscale(full, model.candidates(full, point, label, None, None).logits[0]).full()
    mask_half = model.upscale(half, model.candidates(half, point, label, None, None).logits[0]).full()
    union = np.logical_or(mask_full, mask_half).sum()
    assert union == 0 or np.logical_and(mask_full, mask_half).sum() / union > 0.98


def test_clicks_run_inside_a_pause_complete_one_after_the_other(model_registry):
    """A click decoded inside a batch job's pause finishes before the next click starts: its completion
    (upscaling, polygons) is never itself paused for other waiting work."""
    _, model = model_registry.get("mobile_sam")
    embedding = model.encode(np.random.default_rng(4).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    events: list[str] = []
    batch_started = threading.Event()
    scheduler = Scheduler(SchedulerConfig(max_batch=1))

    def batch_encode() -> None:
        batch_started.set()
        for _ in range(30):
            time.sleep(0.01)
            yield_point()

    def click(name: str) -> PendingDecode:
        def complete(candidates, decode_ms: float) -> str:
            events.append(f"{name} starts")
            yield_point()  # as the engine's prediction does after upscaling
            events.append(f"{name} ends")
            return name

        return PendingDecode(model, DecodeInput(embedding, np.array([[60.0, 60.0]]), np.array([1]), None, None), complete)

    async def scenario():
        batch = asyncio.ensure_future(scheduler.run(batch_encode, user="b", priority=Priority.BATCH))
        await asyncio.to_thread(batch_started.wait, 10)
        clicks = [asyncio.ensure_future(scheduler.run(lambda n=n: click(n), user=n, light=True, batchable=True)) for n in ("a", "c")]
        await asyncio.gather(batch, *clicks)

    try:
        run(scenario())
    finally:
        scheduler.shutdown()
    assert events == ["a starts", "a ends", "c starts", "c ends"], events


def test_polygons_are_traced_off_the_model_thread_while_it_decodes_the_next_click(model_registry):
    """A click's host stage (its polygons) runs on the host pool: the model's thread decodes another
    user's click before the first click's polygons are done."""
    _, model = model_registry.get("mobile_sam")
    embedding = model.encode(np.random.default_rng(5).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    second_decoded = threading.Event()
    threads: dict[str, str] = {}
    scheduler = Scheduler(SchedulerConfig(max_batch=1))

    def first() -> PendingDecode:
        def trace() -> str:
            threads["trace"] = threading.current_thread().name
            assert second_decoded.wait(10), "the model's thread waited for the first click's polygons"
            return "first"

        return PendingDecode(model, DecodeInput(embedding, np.array([[60.0, 60.0]]), np.array([1]), None, None),
                             lambda candidates, decode_ms: HostStage(trace))

    def second() -> PendingDecode:
        def complete(candidates, decode_ms: float) -> str:
            threads["decode"] = threading.current_thread().name
            second_decoded.set()
            return "second"

        return PendingDecode(model, DecodeInput(embedding, np.array([[30.0, 30.0]]), np.array([1]), None, None), complete)

    async def scenario():
        one = asyncio.ensure_future(scheduler.run(first, user="a", light=True, batchable=True))
        await asyncio.sleep(0.05)
        two = asyncio.ensure_future(scheduler.run(second, user="b", light=True, batchable=True))
        return [result for result, _ in await asyncio.gather(one, two)]

    try:
        assert run(scenario()) == ["first", "second"]
    finally:
        scheduler.shutdown()
    assert threads["decode"] == "slidesam-model" and threads["trace"].startswith("slidesam-polygons")
