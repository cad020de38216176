#!/usr/bin/env python3
"""End-to-end test of the fedcsg operator API from an independent client (Python grpcio).

Starts the real `fedcsg-coordinator` and two `fedcsg-worker` processes, then, over gRPC with
stubs generated at run time from proto/fedcsg/v1/fedcsg.proto:

  * checks authentication (no token -> UNAUTHENTICATED) and validation (bad spec ->
    INVALID_ARGUMENT naming the field);
  * checks grpc.health.v1.Health/Check("") == SERVING;
  * creates a small 2-round resnet20 CSG job, watches it to the end and checks every round;
  * checks GetJob, ListJobs and ListWorkers;
  * exports the model and checks every tensor (dtype, encoding, length, CRC-32, finite values)
    and that the number of values equals the job's `exchanged_values`.

Run:  python3 tests/python/operator_client_test.py
Needs: pip install -r tests/python/requirements.txt
Env:   FEDCSG_BIN_DIR  directory holding fedcsg-coordinator and fedcsg-worker
                       (default: <repo>/target/debug)
       FEDCSG_PY_TEST_WATCH_TIMEOUT  seconds to wait for the job (default 150)
       FEDCSG_PY_TEST_SHOW_LOGS      set: print the processes' log tails on success too
Exits 0 on success, 1 on a failed check (with the reason and the processes' log tails).
"""

from __future__ import annotations

import array
import importlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
PROTO_FILE = "fedcsg/v1/fedcsg.proto"
ADMIN_TOKEN = "ADMINTOKEN123"
NUM_WORKERS = 2
ROUNDS = 2
WATCH_TIMEOUT_S = float(os.environ.get("FEDCSG_PY_TEST_WATCH_TIMEOUT", "150"))
RPC_TIMEOUT_S = 30.0
EXPECTED_TENSORS = ["generator.weight", "fc.weight", "layer1.0.conv1.codes", "bn1.running_mean"]

# Fallback when the grpcio-health-checking package is not installed: the standard
# grpc.health.v1 definition, generated at run time like fedcsg.proto.
HEALTH_PROTO = """\
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health {
  rpc Check(HealthCheckRequest) returns (HealthCheckResponse);
  rpc Watch(HealthCheckRequest) returns (stream HealthCheckResponse);
}
"""


class CheckFailed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


try:
    import grpc
except ImportError:  # pragma: no cover - environment problem, explained clearly
    sys.exit("grpcio is not installed: pip install -r tests/python/requirements.txt "
             "(grpcio grpcio-tools grpcio-health-checking)")


# ---------------------------------------------------------------------------------------------
# Stubs
# ---------------------------------------------------------------------------------------------

def protoc(include: Path, proto: str, out: Path) -> None:
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"--python_out={out}",
           f"--grpc_python_out={out}", str(include / proto)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CheckFailed(f"protoc failed ({' '.join(cmd)}):\n{r.stdout}{r.stderr}")


def generate_stubs(tmp: Path):
    out = tmp / "stubs"
    out.mkdir()
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        sys.exit("grpcio-tools is not installed: pip install -r tests/python/requirements.txt")
    protoc(PROTO_DIR, PROTO_FILE, out)
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module("fedcsg.v1.fedcsg_pb2")
    pb2_grpc = importlib.import_module("fedcsg.v1.fedcsg_pb2_grpc")
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        log("health stubs: grpcio-health-checking package")
    except ImportError:
        hdir = tmp / "health_proto"
        (hdir / "grpc_health_fallback").mkdir(parents=True)
        (hdir / "grpc_health_fallback" / "health.proto").write_text(HEALTH_PROTO)
        protoc(hdir, "grpc_health_fallback/health.proto", out)
        health_pb2 = importlib.import_module("grpc_health_fallback.health_pb2")
        health_pb2_grpc = importlib.import_module("grpc_health_fallback.health_pb2_grpc")
        log("health stubs: generated from the embedded health.proto")
    return pb2, pb2_grpc, health_pb2, health_pb2_grpc


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

class Proc:
    def __init__(self, name: str, args: list[str], log_dir: Path):
        self.name = name
        self.args = args
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")
        self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=env)

    def poll(self):
        return self.popen.poll()

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
            except ProcessLookupError:
                pass
        self._log.close()

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(cannot read {self.log_path}: {e})"
        return "\n".join(text[-lines:])


def find_bins() -> tuple[Path, Path]:
    bin_dir = Path(os.environ.get("FEDCSG_BIN_DIR") or (REPO / "target" / "debug"))
    coord = bin_dir / "fedcsg-coordinator"
    worker = bin_dir / "fedcsg-worker"
    for b in (coord, worker):
        if not os.access(b, os.X_OK):
            sys.exit(f"missing binary {b}: run `cargo build --workspace --bins` first "
                     f"(or set FEDCSG_BIN_DIR)")
    return coord, worker


def wait_for_addr(path: Path, coord: Proc, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            addr = path.read_text().strip()
            if addr:
                return addr
        rc = coord.poll()
        if rc is not None:
            raise CheckFailed(f"coordinator exited with status {rc} before writing {path}")
        time.sleep(0.1)
    raise CheckFailed(f"coordinator did not write its address to {path} within {timeout:.0f}s")


class Watchdog(threading.Thread):
    """Cancels the current long call when a child process dies, so a crash fails fast."""

    def __init__(self, procs: list[Proc]):
        super().__init__(daemon=True)
        self.procs = procs
        self.call = None
        self.died: str | None = None
        self._halt = threading.Event()

    GRACE_S = 10.0

    def run(self) -> None:
        first_exit: dict[str, float] = {}
        while not self._halt.wait(0.5):
            now = time.monotonic()
            for p in self.procs:
                rc = p.poll()
                if rc is None:
                    continue
                first_exit.setdefault(p.name, now)
                # The coordinator must outlive the job, and nothing may crash. A worker that ends
                # cleanly may be racing the end of the job: give the stream a grace period.
                fatal = rc != 0 or p.name == "coordinator" or now - first_exit[p.name] > self.GRACE_S
                if fatal:
                    self.died = f"{p.name} exited with status {rc} while the job was running"
                    call = self.call
                    if call is not None:
                        call.cancel()
                    return

    def stop(self) -> None:
        self._halt.set()


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------

def expect_error(fn, code, what: str, must_mention: str | None = None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: expected {code.name}, got {e.code().name}: {e.details()!r}")
        if must_mention is not None:
            check(must_mention in (e.details() or ""),
                  f"{what}: message {e.details()!r} does not name {must_mention!r}")
        log(f"{what}: {e.code().name} ({e.details()})")
        return
    raise CheckFailed(f"{what}: expected {code.name}, but the call succeeded")


def job_spec(pb2, **over):
    spec = pb2.JobSpec(
        name="python-client-test",
        model=pb2.ModelSpec(architecture="resnet20", csg="12-72", in_channels=1, num_classes=10),
        training=pb2.TrainingConfig(local_epochs=1, batch_size=32, learning_rate=0.05, momentum=0.9,
                                    weight_decay=5e-4, max_samples_per_round=128),
        strategy="fedavg",
        rounds=ROUNDS,
        fraction=1.0,
        min_workers=NUM_WORKERS,
        round_deadline_seconds=120,
        seed=1,
        bn_stats="averaged",
    )
    for k, v in over.items():
        if k == "csg":
            spec.model.csg = v
        else:
            setattr(spec, k, v)
    return spec


def f32_values(data: bytes) -> array.array:
    a = array.array("f")
    check(a.itemsize == 4, "this platform's array('f') is not 4 bytes")
    a.frombytes(data)
    if sys.byteorder != "little":
        a.byteswap()
    return a


def check_export(pb2, op, auth, job, watched_sha: str) -> None:
    stream = op.ExportModel(pb2.ExportModelRequest(job_id=job.job_id), metadata=auth, timeout=RPC_TIMEOUT_S)
    header = None
    chunks: list[bytes] = []
    n_msgs = 0
    for msg in stream:
        n_msgs += 1
        part = msg.WhichOneof("part")
        if header is None:
            check(part == "header", f"ExportModel: first message is {part!r}, expected the header")
            header = msg.header
        else:
            check(part == "data", f"ExportModel: message {n_msgs} is {part!r}, expected data")
            check(len(msg.data) > 0, f"ExportModel: message {n_msgs} is an empty data chunk")
            chunks.append(msg.data)
    check(header is not None, "ExportModel: the stream was empty")
    data = b"".join(chunks)
    log(f"ExportModel: header with {len(header.tensors)} tensors, {len(chunks)} data chunks, "
        f"{len(data)} bytes, round {header.round}")
    check(header.job_id == job.job_id, f"ExportModel: header.job_id {header.job_id!r} != {job.job_id!r}")
    check(header.round == ROUNDS, f"ExportModel: header.round {header.round} != {ROUNDS}")
    check(header.model_sha256 == watched_sha,
          f"ExportModel: model_sha256 {header.model_sha256!r} != last round's {watched_sha!r}")
    declared = sum(t.byte_length for t in header.tensors)
    check(declared == len(data), f"ExportModel: tensors declare {declared} bytes, the stream carried {len(data)}")

    names = [t.name for t in header.tensors]
    check(len(set(names)) == len(names), "ExportModel: duplicate tensor names")
    missing = [n for n in EXPECTED_TENSORS if n not in names]
    check(not missing, f"ExportModel: missing tensors {missing}; got {names}")

    total_values = 0
    offset = 0
    for t in header.tensors:
        check(t.dtype == pb2.DTYPE_F32, f"{t.name}: dtype {pb2.Dtype.Name(t.dtype)}, expected DTYPE_F32")
        check(t.encoding == pb2.ENCODING_F32,
              f"{t.name}: encoding {pb2.Encoding.Name(t.encoding)}, expected ENCODING_F32")
        numel = math.prod(t.shape)
        check(len(t.shape) > 0 and numel > 0, f"{t.name}: empty shape {list(t.shape)}")
        check(t.byte_length == 4 * numel,
              f"{t.name}: byte_length {t.byte_length} != 4 * prod({list(t.shape)}) = {4 * numel}")
        body = data[offset:offset + t.byte_length]
        offset += t.byte_length
        crc = zlib.crc32(body) & 0xFFFFFFFF
        check(crc == t.crc32, f"{t.name}: crc32 {crc:#010x} != header's {t.crc32:#010x}")
        values = f32_values(body)
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        check(bad is None, f"{t.name}: value {bad} is {values[bad] if bad is not None else ''} (not finite)")
        total_values += numel
    log(f"ExportModel: {len(names)} tensors, {total_values} values, all F32, CRCs match, all finite")
    check(total_values == job.exchanged_values,
          f"ExportModel: {total_values} values exported but GetJob.exchanged_values = {job.exchanged_values} "
          f"(full_filter_exchanged_values = {job.full_filter_exchanged_values})")


def run_test(tmp: Path, procs: list[Proc]) -> None:
    coord_bin, worker_bin = find_bins()
    pb2, pb2_grpc, health_pb2, health_pb2_grpc = generate_stubs(tmp)

    addr_file = tmp / "coordinator.addr"
    coord = Proc("coordinator", [str(coord_bin), "--listen", "127.0.0.1:0", "--addr-file", str(addr_file),
                                 "--data", "bundled", "--test-limit", "300", "--admin-token", ADMIN_TOKEN], tmp)
    procs.append(coord)
    addr = wait_for_addr(addr_file, coord)
    log(f"coordinator listening on {addr}")

    channel = grpc.insecure_channel(addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
    except grpc.FutureTimeoutError:
        raise CheckFailed(f"could not connect to the coordinator at {addr} within 20s")
    op = pb2_grpc.OperatorServiceStub(channel)
    auth = [("authorization", f"Bearer {ADMIN_TOKEN}")]

    # Health.
    health = health_pb2_grpc.HealthStub(channel)
    resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT_S)
    check(resp.status == health_pb2.HealthCheckResponse.SERVING,
          f"Health/Check(''): {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}, expected SERVING")
    log("Health/Check(''): SERVING")

    # Authentication and validation.
    expect_error(lambda: op.CreateJob(pb2.CreateJobRequest(spec=job_spec(pb2)), timeout=RPC_TIMEOUT_S),
                 grpc.StatusCode.UNAUTHENTICATED, "CreateJob without a token")
    expect_error(lambda: op.CreateJob(pb2.CreateJobRequest(spec=job_spec(pb2, csg="12-x")), metadata=auth,
                                      timeout=RPC_TIMEOUT_S),
                 grpc.StatusCode.INVALID_ARGUMENT, "CreateJob with csg '12-x'", must_mention="csg")
    expect_error(lambda: op.CreateJob(pb2.CreateJobRequest(spec=job_spec(pb2, rounds=0)), metadata=auth,
                                      timeout=RPC_TIMEOUT_S),
                 grpc.StatusCode.INVALID_ARGUMENT, "CreateJob with rounds 0", must_mention="rounds")
    jobs = op.ListJobs(pb2.ListJobsRequest(), metadata=auth, timeout=RPC_TIMEOUT_S).jobs
    check(len(jobs) == 0, f"ListJobs after only refused CreateJobs lists {len(jobs)} jobs")

    # Workers.
    for i in range(NUM_WORKERS):
        procs.append(Proc(f"worker{i}", [str(worker_bin), "--coordinator", f"http://{addr}", "--name", f"py-w{i}",
                                         "--data", "bundled", "--num-partitions", str(NUM_WORKERS),
                                         "--partition-id", str(i)], tmp))

    # The job.
    job = op.CreateJob(pb2.CreateJobRequest(spec=job_spec(pb2)), metadata=auth, timeout=RPC_TIMEOUT_S)
    check(job.job_id != "", "CreateJob returned an empty job_id")
    check(job.spec.model.csg == "12-72" and job.spec.rounds == ROUNDS and job.spec.bn_stats == "averaged",
          f"CreateJob echoed a different spec: {job.spec}")
    check(job.state in (pb2.JOB_STATE_PENDING, pb2.JOB_STATE_RUNNING),
          f"new job is {pb2.JobState.Name(job.state)}")
    log(f"CreateJob: {job.job_id} ({pb2.JobState.Name(job.state)}), exchanged_values {job.exchanged_values}, "
        f"full_filter_exchanged_values {job.full_filter_exchanged_values}")

    watchdog = Watchdog(procs)
    watchdog.start()
    events = []
    t0 = time.monotonic()
    try:
        call = op.WatchJob(pb2.WatchJobRequest(job_id=job.job_id), metadata=auth, timeout=WATCH_TIMEOUT_S)
        watchdog.call = call
        for ev in call:
            log(f"RoundEvent: round {ev.round} participants {ev.participants}/{ev.sampled} "
                f"train_loss {ev.train_loss:.4f} test_accuracy {ev.test_accuracy:.4f} bytes_up {ev.bytes_up} "
                f"bytes_down {ev.bytes_down} {ev.seconds:.1f}s {pb2.JobState.Name(ev.job_state)}")
            events.append(ev)
    except grpc.RpcError as e:
        if watchdog.died:
            raise CheckFailed(f"WatchJob interrupted: {watchdog.died}")
        raise CheckFailed(f"WatchJob failed after {time.monotonic() - t0:.0f}s with {e.code().name}: {e.details()} "
                          f"({len(events)} events received)")
    finally:
        watchdog.stop()
    log(f"WatchJob: stream ended after {time.monotonic() - t0:.1f}s")

    check(len(events) == ROUNDS, f"WatchJob: {len(events)} RoundEvents, expected {ROUNDS}")
    check([e.round for e in events] == list(range(1, ROUNDS + 1)),
          f"WatchJob: rounds {[e.round for e in events]}, expected 1..{ROUNDS}")
    for e in events:
        where = f"round {e.round}"
        check(e.job_id == job.job_id, f"{where}: job_id {e.job_id!r}")
        check(e.participants == NUM_WORKERS, f"{where}: participants {e.participants}, expected {NUM_WORKERS}")
        check(len(set(e.participant_ids)) == NUM_WORKERS, f"{where}: participant_ids {list(e.participant_ids)}")
        check(0.0 <= e.test_accuracy <= 1.0, f"{where}: test_accuracy {e.test_accuracy} not in [0, 1]")
        check(math.isfinite(e.train_loss) and e.train_loss > 0, f"{where}: train_loss {e.train_loss}")
        check(e.bytes_up > 0, f"{where}: bytes_up {e.bytes_up}")
        check(len(e.workers) == NUM_WORKERS, f"{where}: {len(e.workers)} WorkerRoundStats")
        check(sum(w.bytes_up for w in e.workers) == e.bytes_up,
              f"{where}: per-worker bytes_up {[w.bytes_up for w in e.workers]} do not sum to {e.bytes_up}")
        check(all(w.num_samples > 0 for w in e.workers), f"{where}: a worker trained on 0 samples")
        check(len(e.model_sha256) == 64, f"{where}: model_sha256 {e.model_sha256!r}")
    check(events[-1].job_state == pb2.JOB_STATE_SUCCEEDED,
          f"last RoundEvent job_state {pb2.JobState.Name(events[-1].job_state)}")

    job = op.GetJob(pb2.GetJobRequest(job_id=job.job_id), metadata=auth, timeout=RPC_TIMEOUT_S)
    check(job.state == pb2.JOB_STATE_SUCCEEDED,
          f"GetJob: state {pb2.JobState.Name(job.state)} ({job.message!r}), expected JOB_STATE_SUCCEEDED")
    check(job.rounds_completed == ROUNDS, f"GetJob: rounds_completed {job.rounds_completed}")
    check([r.model_sha256 for r in job.rounds] == [e.model_sha256 for e in events],
          "GetJob: rounds differ from the watched RoundEvents")
    check(job.exchanged_values > 0, "GetJob: exchanged_values is 0")
    log(f"GetJob: {pb2.JobState.Name(job.state)}, rounds_completed {job.rounds_completed}")
    jobs = op.ListJobs(pb2.ListJobsRequest(), metadata=auth, timeout=RPC_TIMEOUT_S).jobs
    check([j.job_id for j in jobs] == [job.job_id], f"ListJobs: {[j.job_id for j in jobs]}")

    workers = op.ListWorkers(pb2.ListWorkersRequest(), metadata=auth, timeout=RPC_TIMEOUT_S).workers
    for w in workers:
        log(f"ListWorkers: {w.worker_id} {w.worker_name} samples {w.num_samples} state {w.state} "
            f"rounds_contributed {w.rounds_contributed}")
    check(len(workers) == NUM_WORKERS, f"ListWorkers: {len(workers)} workers, expected {NUM_WORKERS}")
    check(sorted(w.worker_name for w in workers) == [f"py-w{i}" for i in range(NUM_WORKERS)],
          f"ListWorkers: names {[w.worker_name for w in workers]}")
    check(all(w.num_samples > 0 for w in workers), "ListWorkers: a worker has 0 samples")
    ids = {w.worker_id for w in workers}
    for e in events:
        check(set(e.participant_ids) == ids,
              f"round {e.round}: participant_ids {list(e.participant_ids)} are not the listed workers {sorted(ids)}")
    check(all(w.rounds_contributed == ROUNDS for w in workers),
          f"ListWorkers: rounds_contributed {[w.rounds_contributed for w in workers]}, expected {ROUNDS} each")

    check_export(pb2, op, auth, job, events[-1].model_sha256)
    expect_error(lambda: list(op.ExportModel(pb2.ExportModelRequest(job_id=job.job_id), timeout=RPC_TIMEOUT_S)),
                 grpc.StatusCode.UNAUTHENTICATED, "ExportModel without a token")
    channel.close()


def main() -> int:
    started = time.monotonic()
    procs: list[Proc] = []

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix="fedcsg-pytest-"))
    ok = False
    try:
        run_test(tmp, procs)
        ok = True
    except CheckFailed as e:
        print(f"\nFAILED: {e}", file=sys.stderr)
    except grpc.RpcError as e:
        print(f"\nFAILED: unexpected RPC error {e.code().name}: {e.details()}", file=sys.stderr)
        traceback.print_exc()
    except KeyboardInterrupt as e:
        print(f"\nINTERRUPTED: {e}", file=sys.stderr)
    except Exception:  # noqa: BLE001 - report anything else as a failure
        print("\nFAILED: unexpected exception", file=sys.stderr)
        traceback.print_exc()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for p in reversed(procs):
            p.stop()
        if not ok or os.environ.get("FEDCSG_PY_TEST_SHOW_LOGS"):
            for p in procs:
                print(f"\n----- {p.name} ({' '.join(p.args)}), exit status {p.popen.returncode}, last lines -----",
                      file=sys.stderr)
                print(p.tail(), file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    if ok:
        print(f"\nPASSED in {time.monotonic() - started:.1f}s")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
