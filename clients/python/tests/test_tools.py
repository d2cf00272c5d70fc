"""Tools with their prices, and estimates that match what a submission charges."""

from pathlib import Path

from jobgraph import Client, Workspace


def test_tools_are_listed_with_inputs_and_prices(client: Client) -> None:
    tools = {tool.name: tool for tool in client.tools()}
    assert {"sequence-stats", "kmer-count", "translate-dna", "sleep", "noop"} <= set(tools)
    kmer = tools["kmer-count"]
    assert kmer.price.base == 2
    assert kmer.price.per_1k_residues == 1
    assert kmer.price.per_setting_unit == {"k": 1}
    assert [(i.name, i.kind, i.required) for i in kmer.inputs] == [("sequences", "FILE", True)]
    assert kmer.settings_schema["required"] == ["k"]
    assert client.tool("sleep").price.per_setting_unit == {"seconds": 1}


def test_an_estimate_of_a_file_is_what_its_submission_charges(
    client: Client, workspace: Workspace, fasta: Path
) -> None:
    estimate = client.estimate("kmer-count", {"sequences": fasta}, {"k": 3}, workspace=workspace.id)
    # base 2, one started thousand residues, k = 3 at 1 credit each.
    assert estimate.total == 6
    assert [(line.label, line.amount) for line in estimate.breakdown] == [
        ("base", 2),
        ("thousand residues", 1),
        ("setting k", 3),
    ]
    assert estimate.balance == 1000
    assert estimate.affordable is True

    job = client.submit(
        "kmer-count", workspace=workspace.id, inputs={"sequences": fasta}, settings={"k": 3}
    )
    assert job.credit_cost == estimate.total
    assert client.workspace(workspace.id).credit_balance == 1000 - estimate.total
    job.wait(progress=False)


def test_an_estimate_without_a_workspace_has_no_balance(client: Client) -> None:
    estimate = client.estimate("sleep", settings={"seconds": 7})
    assert estimate.total == 8
    assert estimate.balance is None
    assert estimate.affordable is None
