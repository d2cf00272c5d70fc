"""Submitting files, waiting with a progress bar, failures, cancellation and downloads."""

from pathlib import Path

import pytest
from conftest import Server

from jobgraph import Client, JobFailed, JobgraphError, Url, Workspace


def test_a_submitted_file_is_uploaded_and_runs_to_completed(
    client: Client, workspace: Workspace, fasta: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = client.submit("sequence-stats", workspace=workspace.id, inputs={"sequences": fasta})
    assert job.status in {"QUEUED", "PROCESSING", "COMPLETED"}
    [uploaded] = job.inputs
    assert (uploaded.name, uploaded.size) == ("reads.fa", fasta.stat().st_size)

    done = job.wait(progress=True)

    assert done.status == "COMPLETED"
    assert done.progress == 1.0
    assert done.result["count"] == 2
    assert done.result["totalLength"] == 18
    # The bar went to stderr, ending full with the final status.
    bar = capsys.readouterr().err
    assert "100%" in bar
    assert "COMPLETED" in bar


def test_bytes_and_inline_text_are_inputs_too(client: Client, workspace: Workspace) -> None:
    from_bytes = client.submit(
        "sequence-stats", workspace=workspace.id, inputs={"sequences": b">a\nACGT\n"}
    )
    inline = client.submit(
        "sequence-stats", workspace=workspace.id, inputs={"sequences": ">a\nACGTAC\n"}
    )
    assert [f.name for f in from_bytes.inputs] == ["sequences"]
    assert inline.inputs == []
    assert from_bytes.wait(progress=False).result["totalLength"] == 4
    assert inline.wait(progress=False).result["totalLength"] == 6


def test_a_job_whose_input_cannot_be_fetched_raises_job_failed(
    client: Client, workspace: Workspace
) -> None:
    # The server fetches URL inputs itself, and never from its own loopback network.
    job = client.submit(
        "sequence-stats",
        workspace=workspace.id,
        inputs={"sequences": Url("http://127.0.0.1:9/reads.fa")},
    )
    with pytest.raises(JobFailed) as failed:
        job.wait(progress=True)
    assert failed.value.code == "DOWNLOAD_FAILED"
    assert failed.value.job.status == "FAILED"
    assert "loopback" in (failed.value.job.error_message or "")
    assert job.refresh().refunded is True

    returned = job.wait(progress=False, raise_on_failure=False)
    assert returned.status == "FAILED"


def test_a_cancelled_job_raises_job_failed_with_its_status(
    client: Client, workspace: Workspace
) -> None:
    job = client.submit("sleep", workspace=workspace.id, settings={"seconds": 60})
    assert job.cancel().status == "CANCELLED"
    with pytest.raises(JobFailed) as failed:
        job.wait(progress=False)
    assert failed.value.code == "CANCELLED"


def test_waiting_past_the_timeout_raises_timeout_error(
    client: Client, workspace: Workspace
) -> None:
    job = client.submit("sleep", workspace=workspace.id, settings={"seconds": 60})
    with pytest.raises(TimeoutError):
        job.wait(progress=False, timeout=1)
    job.cancel()


def test_outputs_are_downloaded_and_checked(
    client: Client, workspace: Workspace, fasta: Path, tmp_path: Path
) -> None:
    job = client.submit("sequence-stats", workspace=workspace.id, inputs={"sequences": fasta})
    done = job.wait(progress=False)

    [path] = done.download(tmp_path / "out")

    assert path == tmp_path / "out" / "sequences.tsv"
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["id", "length", "gc_content"]
    assert [line.split("\t")[:2] for line in lines[1:]] == [["seq1", "12"], ["seq2", "6"]]
    [output] = done.outputs
    assert output.read_text() == path.read_text()
    assert [f.name for f in done.inputs] == ["reads.fa"]
    assert done.inputs[0].read_bytes() == fasta.read_bytes()


def test_a_download_that_does_not_match_its_sha256_is_refused(
    server: Server, client: Client, workspace: Workspace, fasta: Path, tmp_path: Path
) -> None:
    done = client.submit(
        "sequence-stats", workspace=workspace.id, inputs={"sequences": fasta}
    ).wait(progress=False)
    [output] = done.outputs
    expected = output.read_bytes()
    # Damage the stored object in the server's local storage, kept under the job's folder.
    job_folder = done.id.removeprefix("job_")
    [stored] = [
        p
        for p in (server.folder / "data" / "files").glob(f"*/{job_folder}/outputs/*/*")
        if p.read_bytes() == expected
    ]
    stored.write_bytes(expected.replace(b"seq1", b"seqX"))

    with pytest.raises(JobgraphError, match="SHA-256"):
        done.download(tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(JobgraphError, match="SHA-256"):
        output.read_text()
