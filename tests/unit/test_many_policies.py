"""Many policies in one set: a load works out each expression text once and shares it
(service/policy/cel/memo.py) without one policy's context leaking into another's, and an
unknown policy name costs little at any number of policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.policy import PolicyError, load_policies
from service.policy.cel import memo
from service.policy.compiled import MAX_NEIGHBOURS, PolicySet
from service.policy.errors import UnknownPolicyError
from service.policy.loader import policy_files, policy_names

HEAD = "apiVersion: handshake/v1\nkind: ConnectionPolicy\n"


def write(directory: Path, name: str, body: str) -> None:
    path = directory / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEAD + body, encoding="utf-8")


def rule(when: str) -> str:
    return (
        f"rules:\n  - {{id: r, when: '{when}', decision: accept, rationale: 'ok'}}\n"
        "default: {decision: ignore, rationale: 'no'}\n"
    )


def test_policies_with_the_same_text_share_its_program(tmp_path: Path) -> None:
    when = "request.relationship.mutual_connections > 3"
    for name in ("a", "b", "team/c"):
        write(tmp_path, name, rule(when))
    policies = load_policies(tmp_path).policies
    whens = [policies[n].rules[0].when for n in ("a", "b", "team/c")]
    assert len({id(w.expression) for w in whens}) == 1  # one Expression for the text
    assert all(w.expression._tree is None for w in whens)  # released once the load is done


def test_a_load_forgets_what_it_worked_out(tmp_path: Path) -> None:
    write(tmp_path, "a", rule("request.requester.has_photo"))
    load_policies(tmp_path)
    assert all(cache.cache_info().currsize == 0 for cache in memo._CACHES)
    assert all(not table for table in memo._TABLES)


def test_an_error_in_a_shared_text_is_reported_in_every_policy(tmp_path: Path) -> None:
    when = 'request.relationship.mutual_connections > "3"'
    for name in ("a", "b"):
        write(tmp_path, name, rule(when))
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    errors = [p for p in raised.value.problems if "type error" in p.message]
    assert [p.file.rsplit("/", 1)[-1] for p in errors] == ["a.yaml", "b.yaml"]


def test_the_same_text_is_estimated_with_each_policys_params(tmp_path: Path) -> None:
    """The cost walk is shared only where the sizes it read are the same: with a long list
    in its params, one of two policies with the same text is over the budget."""
    when = "params.names.all(a, params.names.all(b, size(a + b + a + b) > 0))"
    write(tmp_path, "short", "params: {names: [x, y]}\n" + rule(when))
    long_name = "n" * 4000
    names = ", ".join([long_name] * 200)
    write(tmp_path, "long", f"params: {{names: [{names}]}}\n" + rule(when))
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    over = [p for p in raised.value.problems if "the budget is" in p.message]
    assert [p.file.rsplit("/", 1)[-1] for p in over] == ["long.yaml"]


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("params: {n: 5}\n", "params: {n: five}\n"),
        ("params: {n: 5}\nvariables: {m: params.n}\n", "params: {n: 5}\nvariables: {m: '\"x\"'}\n"),
        (
            "params: {n: 5, o: 1}\nvariables: {m: params.n}\n",
            "params: {n: x, o: 1}\nvariables: {m: params.n}\n",
        ),
    ],
)
def test_a_shared_text_runs_in_each_policys_context(tmp_path: Path, good: str, bad: str) -> None:
    """The probe's runs are shared only between policies whose params and variables are the
    same: the same `when` is a type error in one policy and fine in another."""
    when = "variables.m > 3" if "variables" in good else "params.n > 3"
    write(tmp_path, "good", good + rule(when))
    write(tmp_path, "bad", bad + rule(when))
    with pytest.raises(PolicyError) as raised:
        load_policies(tmp_path)
    assert [p.file.rsplit("/", 1)[-1] for p in raised.value.problems] == ["bad.yaml"]
    assert "type error on a representative request" in raised.value.problems[0].message


def names(count: int, folder: str = "teams") -> dict[str, None]:
    return {f"{folder}/t{i:05d}": None for i in range(count)}


def unknown(policy_set: PolicySet, name: str) -> str:
    with pytest.raises(UnknownPolicyError) as raised:
        policy_set.get(name)
    return str(raised.value)


def test_an_unknown_name_is_matched_within_its_folder() -> None:
    known = ["teams/sales", "teams/support", "teams/recruiting", "default", "sales/emea"]
    policy_set = PolicySet(policies=dict.fromkeys(known), digest="")
    assert unknown(policy_set, "teams/recruting").endswith("did you mean `teams/recruiting`?")
    assert unknown(policy_set, "defualt").endswith("did you mean `default`?")
    assert unknown(policy_set, "sale/emea").endswith("did you mean `sales/emea`?")
    assert unknown(policy_set, "nowhere/x") == "unknown policy `nowhere/x`"


def test_a_crowded_folder_is_not_searched() -> None:
    crowded = PolicySet(policies=names(MAX_NEIGHBOURS + 1), digest="")
    assert crowded.neighbours("teams/t0000l") == []
    assert unknown(crowded, "teams/t0000l") == "unknown policy `teams/t0000l`"
    within = PolicySet(policies=names(MAX_NEIGHBOURS), digest="")
    assert len(within.neighbours("teams/t0000l")) == MAX_NEIGHBOURS


def test_the_files_listed_and_their_order(tmp_path: Path) -> None:
    """What a load reads, in the order its digest covers them: files in a folder before a
    sibling whose name sorts after the folder's (by path parts), hidden ones and symlinked
    folders left out, symlinked files in, suites apart."""
    for relative in ("a/b.yaml", "a-b.yaml", "dir.yaml/c.yml", ".hidden/x.yaml", "x/.y.yaml"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("")
    (tmp_path / "t_test.yaml").write_text("")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "link").symlink_to(tmp_path / "a", target_is_directory=True)
    (tmp_path / "file_link.yaml").symlink_to(tmp_path / "a-b.yaml")
    (tmp_path / "dangling.yaml").symlink_to(tmp_path / "nowhere.yaml")
    listed = [p.relative_to(tmp_path).as_posix() for p in policy_files(tmp_path)]
    assert listed == ["a/b.yaml", "a-b.yaml", "dir.yaml/c.yml", "file_link.yaml"]
    assert policy_names(tmp_path) == ["a/b", "a-b", "dir.yaml/c", "file_link"]
    assert policy_files(tmp_path, suites=True) == [tmp_path / "t_test.yaml"]
