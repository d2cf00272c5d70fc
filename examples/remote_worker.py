#!/usr/bin/env python3
"""A remote worker for jobgraph, using only the Python standard library.

It claims jobs of one or more `remote` tools through the worker API, downloads their inputs,
runs a command (or the Python function `handle` below) for each, renews the lease from a
heartbeat thread, reports progress, and completes the job with a result and output files, or
fails it.

    export JOBGRAPH_TOKEN=jg_...            # a worker token: jobgraph token create --worker ...
    python3 remote_worker.py --url https://jobs.example.org/graphql --tool align -- \\
        sh -c 'bwa mem ref.fa "$JOBGRAPH_INPUT_READS" > outputs/aligned.sam'

The command runs in a fresh working directory holding `inputs/` and `outputs/`:

- each input is a file `inputs/<name>` (text inputs too), also named by the environment
  variable `JOBGRAPH_INPUT_<NAME>` and by the argument placeholder `{input:<name>}`;
- settings are in `JOBGRAPH_SETTINGS` (JSON) and the placeholders `{setting:<name>}`;
- a line `progress: 0.4 Aligning` on standard output reports progress and a stage;
- files left in `outputs/` are uploaded, and `result.json`, if written, is the job's result;
- exit status 0 completes the job; 75 (EX_TEMPFAIL) fails it as transient (it is retried while
  attempts remain); any other status fails it for good.

Without a command, `handle` runs instead: edit it to call your own Python code.

On SIGTERM or SIGINT (Slurm's end of allocation, a Kubernetes pod's termination) the worker
stops its command and fails the attempt as transient, so the job is run again elsewhere.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

CLAIM = """mutation($worker: String!, $tools: [String!]!, $limit: Int, $lease: Int) {
  claimJobs(input: {worker: $worker, tools: $tools, limit: $limit, leaseSeconds: $lease}) {
    jobs { id tool attempt attemptToken traceparent timeoutSeconds settings
           inputs { name kind text file { name downloadUrl } } }
  }
}"""
HEARTBEAT = """mutation($a: String!) { heartbeatJob(attempt: $a) { cancelled leaseExpiresAt } }"""
PROGRESS = """mutation($a: String!, $p: Float, $s: String) {
  reportJobProgress(attempt: $a, progress: $p, stage: $s) { cancelled }
}"""
COMPLETE = """mutation($a: String!, $result: JSON, $outputs: [Upload!]) {
  completeJob(attempt: $a, result: $result, outputs: $outputs) { status }
}"""
FAIL = """mutation($a: String!, $m: String!, $t: Boolean!) {
  failJob(attempt: $a, message: $m, transient: $t) { status }
}"""

TEMPFAIL = 75
PROGRESS_LINE = re.compile(r"^progress:\s*([0-9.]+)\s*(.*)$")


class ApiError(Exception):
    """A GraphQL error, with its `extensions.code`."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Stale(Exception):
    """The attempt is no longer the job's: it was cancelled, timed out or taken back."""


class Client:
    def __init__(self, url, token):
        self.url = url
        self.token = token

    def _headers(self, traceparent):
        """The token, and the job's trace context so that the server's spans join its trace."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if traceparent:
            headers["traceparent"] = traceparent
        return headers

    def _send(self, body, content_type, traceparent=None):
        request = urllib.request.Request(
            self.url,
            data=body,
            headers={
                **self._headers(traceparent),
                "Content-Type": content_type,
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as err:
            answer = json.load(err)
        errors = answer.get("errors")
        if errors:
            code = errors[0].get("extensions", {}).get("code", "ERROR")
            raise ApiError(code, errors[0].get("message", ""))
        return answer["data"]

    def call(self, query, traceparent=None, **variables):
        body = json.dumps({"query": query, "variables": variables}).encode()
        return self._send(body, "application/json", traceparent)

    def call_with_files(self, query, variables, files_variable, paths, traceparent=None):
        """A GraphQL multipart request: `variables[files_variable]` becomes the files."""
        variables = dict(variables)
        variables[files_variable] = [None] * len(paths)
        mapping = {str(i): [f"variables.{files_variable}.{i}"] for i in range(len(paths))}
        boundary = uuid.uuid4().hex
        parts = []

        def field(name, value, filename=None):
            disposition = f'form-data; name="{name}"'
            if filename is not None:
                disposition += f'; filename="{filename}"'
            head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
            if filename is not None:
                head += "Content-Type: application/octet-stream\r\n"
            parts.append(head.encode() + b"\r\n" + value + b"\r\n")

        field("operations", json.dumps({"query": query, "variables": variables}).encode())
        field("map", json.dumps(mapping).encode())
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                field(str(i), f.read(), os.path.basename(path))
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return self._send(body, f"multipart/form-data; boundary={boundary}", traceparent)

    def download(self, url, path, traceparent=None):
        request = urllib.request.Request(url, headers=self._headers(traceparent))
        with urllib.request.urlopen(request, timeout=300) as response, open(path, "wb") as out:
            shutil.copyfileobj(response, out)


def log(message):
    print(f"[remote-worker] {message}", file=sys.stderr, flush=True)


class Attempt:
    """One claimed job while it runs: its heartbeat and its channel back to jobgraph."""

    def __init__(self, client, job, lease_seconds):
        self.client = client
        self.job = job
        self.token = job["attemptToken"]
        # The trace of the job's submission, when the server exports traces.
        self.traceparent = job.get("traceparent")
        self.every = max(1.0, lease_seconds / 3)
        self.over = threading.Event()  # cancelled or stale: stop the run
        self.done = threading.Event()
        self.process = None
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def _beat(self):
        while not self.done.wait(self.every):
            try:
                answer = self.client.call(HEARTBEAT, self.traceparent, a=self.token)["heartbeatJob"]
                if answer["cancelled"]:
                    log(f"job {self.job['id']} was cancelled")
                    self.stop()
            except ApiError as err:
                if err.code == "STALE_ATTEMPT":
                    log(f"job {self.job['id']}: {err}")
                    self.stop()
                else:
                    log(f"heartbeat failed: {err}")
            except OSError as err:
                log(f"heartbeat failed: {err}")

    def stop(self):
        self.over.set()
        if self.process and self.process.poll() is None:
            self.process.terminate()

    def report(self, progress, stage=None):
        try:
            answer = self.client.call(
                PROGRESS, self.traceparent, a=self.token, p=progress, s=stage
            )
            if answer["reportJobProgress"]["cancelled"]:
                self.stop()
        except ApiError as err:
            if err.code == "STALE_ATTEMPT":
                self.stop()
            else:
                log(f"reporting progress failed: {err}")
        if self.over.is_set():
            raise Stale()


def prepare(client, job, workdir):
    """Writes the inputs under `workdir/inputs`; returns their paths by name."""
    os.makedirs(os.path.join(workdir, "inputs"))
    os.makedirs(os.path.join(workdir, "outputs"))
    paths = {}
    for item in job["inputs"]:
        path = os.path.join(workdir, "inputs", item["name"])
        if item.get("file"):
            client.download(item["file"]["downloadUrl"], path, job.get("traceparent"))
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(item.get("text") or "")
        paths[item["name"]] = path
    return paths


def handle(job, workdir, inputs, attempt):
    """The Python function run when no command is given: counts the lines and bytes of each
    input and writes them to `outputs/summary.json`. Replace it with your own code; raise
    `TransientError` for a failure worth another attempt."""
    attempt.report(0.1, "Reading inputs")
    summary = {}
    for name, path in inputs.items():
        with open(path, "rb") as f:
            data = f.read()
        summary[name] = {"bytes": len(data), "lines": data.count(b"\n")}
    with open(os.path.join(workdir, "outputs", "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    attempt.report(0.9, "Writing outputs")
    return {"inputs": summary}


class TransientError(Exception):
    """A failure worth another attempt."""


def run_command(command, job, workdir, inputs, attempt):
    """Runs the command for a job; returns the result or raises."""
    settings = job.get("settings") or {}

    def expand(arg):
        arg = re.sub(r"\{input:([^}]+)\}", lambda m: inputs.get(m.group(1), ""), arg)
        return re.sub(
            r"\{setting:([^}]+)\}",
            lambda m: str(settings.get(m.group(1), "")),
            arg,
        )

    env = dict(os.environ)
    env.pop("JOBGRAPH_TOKEN", None)  # the command never needs the worker's token
    env["JOBGRAPH_JOB_ID"] = job["id"]
    env["JOBGRAPH_ATTEMPT"] = str(job["attempt"])
    env["JOBGRAPH_SETTINGS"] = json.dumps(settings)
    for name, path in inputs.items():
        env["JOBGRAPH_INPUT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()] = path
    attempt.process = subprocess.Popen(
        [expand(arg) for arg in command],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    timeout = job.get("timeoutSeconds")
    killer = threading.Timer(timeout, attempt.stop) if timeout else None
    if killer:
        killer.start()
    try:
        for line in attempt.process.stdout:
            match = PROGRESS_LINE.match(line.strip())
            if match:
                attempt.report(min(1.0, float(match.group(1))), match.group(2) or None)
        status = attempt.process.wait()
    finally:
        if killer:
            killer.cancel()
    if attempt.over.is_set():
        raise Stale()
    if status == TEMPFAIL or status < 0:
        raise TransientError(f"the command exited with status {status}")
    if status != 0:
        raise RuntimeError(f"the command exited with status {status}")
    result_path = os.path.join(workdir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    return {"exitCode": 0}


def fail(client, job, attempt, message, transient):
    try:
        client.call(FAIL, attempt.traceparent, a=attempt.token, m=message, t=transient)
        log(f"job {job['id']} failed ({'transient' if transient else 'permanent'}): {message}")
    except (ApiError, OSError) as err:
        log(f"job {job['id']}: failing it was refused: {err}")


def run_job(client, job, command, lease_seconds, stopping):
    log(f"running job {job['id']} ({job['tool']}, attempt {job['attempt']})")
    workdir = tempfile.mkdtemp(prefix="jobgraph-")
    try:
        with Attempt(client, job, lease_seconds) as attempt:
            stopping.append(attempt)
            try:
                inputs = prepare(client, job, workdir)
                if command:
                    result = run_command(command, job, workdir, inputs, attempt)
                else:
                    result = handle(job, workdir, inputs, attempt)
                outputs_dir = os.path.join(workdir, "outputs")
                outputs = sorted(
                    os.path.join(outputs_dir, name)
                    for name in os.listdir(outputs_dir)
                    if os.path.isfile(os.path.join(outputs_dir, name))
                )
                client.call_with_files(
                    COMPLETE,
                    {"a": attempt.token, "result": result},
                    "outputs",
                    outputs,
                    attempt.traceparent,
                )
                log(f"job {job['id']} completed")
            except Stale:
                if stopping_signal:
                    fail(client, job, attempt, "the worker was stopped", True)
                else:
                    log(f"job {job['id']} stopped: it is no longer this attempt's")
            except ApiError as err:
                if err.code == "STALE_ATTEMPT":
                    log(f"job {job['id']}: {err}")
                else:
                    fail(client, job, attempt, str(err), True)
            except Exception as err:  # noqa: BLE001 - every failure is reported
                transient = isinstance(err, (TransientError, OSError)) or bool(stopping_signal)
                fail(client, job, attempt, str(err) or repr(err), transient)
            finally:
                stopping.remove(attempt)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


stopping_signal = []


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("JOBGRAPH_URL", "http://127.0.0.1:8000/graphql"))
    parser.add_argument("--tool", action="append", required=True, help="a remote tool to run; repeatable")
    parser.add_argument("--worker", default=f"{socket.gethostname()}-{os.getpid()}", help="this worker's name")
    parser.add_argument("--lease-seconds", type=int, default=60)
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="wait between empty claims")
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs; 0 runs until stopped")
    parser.add_argument("--once", action="store_true", help="claim once, run what was claimed, exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the command to run per job")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    token = os.environ.get("JOBGRAPH_TOKEN")
    if not token:
        parser.error("set JOBGRAPH_TOKEN to a worker token")
    client = Client(args.url, token)

    running = []

    def on_signal(signum, _frame):
        stopping_signal.append(signum)
        for attempt in list(running):
            attempt.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    done = 0
    while not stopping_signal:
        try:
            jobs = client.call(
                CLAIM, worker=args.worker, tools=args.tool, limit=1, lease=args.lease_seconds
            )["claimJobs"]["jobs"]
        except (ApiError, OSError) as err:
            log(f"claiming failed: {err}")
            jobs = []
        for job in jobs:
            run_job(client, job, command, args.lease_seconds, running)
            done += 1
        if args.once or (args.max_jobs and done >= args.max_jobs):
            break
        if not jobs:
            time.sleep(args.poll_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
