"""Accounts as the API, the CLI and the driver rely on them: tenant ids, budgets held and
released, spend as reported, keys, and Idempotency-Key records. Each test pins a rule a
caller sees (a limit, a boundary, an amount of money, an outcome)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from tests.jobs.conftest import make_job
from vidgate.billing.accounts import IDEMPOTENCY_STALE_S, KEY_PREFIX, Accounts
from vidgate.errors import BudgetExceeded, InvalidRequest
from vidgate.jobs import db
from vidgate.jobs.store import JobStore, LedgerEntry
from vidgate.types import JobState


@pytest.fixture
def accounts(store: JobStore) -> Accounts:
    return Accounts(store)


# -- tenant ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["a", "x" * 64, "Acme-1_2.b", "0", "a.b.c"])
def test_tenant_ids_that_are_accepted(accounts: Accounts, tenant: str) -> None:
    assert accounts.ensure_tenant(tenant)["id"] == tenant
    assert accounts.tenant(tenant) is not None


@pytest.mark.parametrize(
    "tenant", ["", "x" * 65, "a b", "a/b", "a:b", "a@b", "a\nb", "../etc", "ten ant"]
)
def test_tenant_ids_that_are_refused(accounts: Accounts, tenant: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        accounts.ensure_tenant(tenant)
    assert str(e.value) == "tenant ids are 1-64 letters, digits, '-', '_' or '.'"
    assert accounts.tenant(tenant) is None
    with pytest.raises(InvalidRequest):
        accounts.create_key(tenant)  # a key cannot name a bad tenant either


def test_a_new_tenant_starts_empty_with_markup_one(accounts: Accounts) -> None:
    row = accounts.ensure_tenant("fresh")
    assert (row["budget_usd"], row["reserved_usd"], row["spent_usd"]) == (None, 0.0, 0.0)
    assert (row["markup"], row["max_concurrent_jobs"]) == (1.0, None)
    row = accounts.ensure_tenant("set", budget_usd=5.0, markup=1.25, max_concurrent_jobs=3)
    assert (row["budget_usd"], row["markup"], row["max_concurrent_jobs"]) == (5.0, 1.25, 3)


def test_updating_a_tenant_changes_only_what_is_given(accounts: Accounts) -> None:
    accounts.ensure_tenant("t", budget_usd=5.0, markup=1.25, max_concurrent_jobs=3)
    assert accounts.ensure_tenant("t")["budget_usd"] == 5.0  # nothing given: unchanged
    row = accounts.ensure_tenant("t", budget_usd=7.5)
    assert (row["budget_usd"], row["markup"], row["max_concurrent_jobs"]) == (7.5, 1.25, 3)
    row = accounts.ensure_tenant("t", markup=2.0)
    assert (row["budget_usd"], row["markup"], row["max_concurrent_jobs"]) == (7.5, 2.0, 3)
    row = accounts.ensure_tenant("t", max_concurrent_jobs=9)
    assert (row["budget_usd"], row["markup"], row["max_concurrent_jobs"]) == (7.5, 2.0, 9)


# -- budgets ------------------------------------------------------------------------------------


def _reserved(accounts: Accounts, tenant: str) -> float:
    row = accounts.tenant(tenant)
    assert row is not None
    return float(row["reserved_usd"])


def test_reserving_for_an_unknown_tenant_holds_nothing(accounts: Accounts) -> None:
    assert accounts.reserve("nobody", 1.0) is False
    assert accounts.tenant("nobody") is None  # and creates no row


def test_without_a_budget_every_reservation_is_held(accounts: Accounts) -> None:
    accounts.ensure_tenant("free")
    assert accounts.reserve("free", 1000.0) is True
    assert accounts.reserve("free", 0.5) is True
    assert _reserved(accounts, "free") == pytest.approx(1000.5)


def test_a_budget_holds_up_to_exactly_its_amount(accounts: Accounts) -> None:
    accounts.ensure_tenant("t", budget_usd=1.0)
    assert accounts.reserve("t", 0.6) is True
    assert accounts.reserve("t", 0.4) is True  # exactly the rest fits
    with pytest.raises(BudgetExceeded) as e:
        accounts.reserve("t", 0.01)
    assert str(e.value) == (
        "tenant t has $0.00 of its $1.00 budget left; this job may cost up to $0.01"
    )
    assert _reserved(accounts, "t") == pytest.approx(1.0)  # the refusal held nothing


def test_a_reservation_over_the_budget_is_refused_naming_what_is_left(
    accounts: Accounts,
) -> None:
    accounts.ensure_tenant("t", budget_usd=1.0)
    assert accounts.reserve("t", 0.25)
    with pytest.raises(BudgetExceeded) as e:
        accounts.reserve("t", 0.8)
    assert str(e.value) == (
        "tenant t has $0.75 of its $1.00 budget left; this job may cost up to $0.80"
    )
    with pytest.raises(BudgetExceeded):
        accounts.reserve("t", 1.5)  # more than the whole budget, with nothing held
    assert _reserved(accounts, "t") == pytest.approx(0.25)


def test_spent_money_counts_against_the_budget(store: JobStore, accounts: Accounts) -> None:
    accounts.ensure_tenant("t", budget_usd=1.0)
    assert accounts.reserve("t", 0.9)
    _finish(store, "t", ("off-a", 0.7, "charge"), reserved=0.9)  # 0.2 of the hold released
    assert _reserved(accounts, "t") == pytest.approx(0.0)
    assert accounts.reserve("t", 0.3) is True  # 0.7 spent + 0.3 = the budget
    with pytest.raises(BudgetExceeded) as e:
        accounts.reserve("t", 0.05)
    assert "has $0.00 of its $1.00 budget left" in str(e.value)


def test_a_budget_lowered_below_what_is_held_shows_nothing_left(accounts: Accounts) -> None:
    accounts.ensure_tenant("t", budget_usd=1.0)
    assert accounts.reserve("t", 0.5)
    accounts.ensure_tenant("t", budget_usd=0.2)
    with pytest.raises(BudgetExceeded) as e:
        accounts.reserve("t", 0.1)
    assert "has $0.00 of its $0.20 budget left" in str(e.value)


def test_release_gives_back_what_was_held_and_never_below_zero(accounts: Accounts) -> None:
    accounts.ensure_tenant("t", budget_usd=1.0)
    accounts.reserve("t", 0.6)
    accounts.release("t", 0.25)
    assert _reserved(accounts, "t") == pytest.approx(0.35)
    assert accounts.reserve("t", 0.65) is True  # the released money can be held again
    accounts.release("t", 5.0)
    assert _reserved(accounts, "t") == 0.0
    accounts.ensure_tenant("other")
    accounts.reserve("other", 0.5)
    accounts.release("t", 0.1)
    assert _reserved(accounts, "other") == pytest.approx(0.5)  # one tenant's release only


def test_running_jobs_counts_the_tenants_unfinished_jobs(store: JobStore) -> None:
    accounts = Accounts(store)
    for tenant in ("a", "a", "b"):
        store.create(make_job(tenant=tenant))
    done = make_job(tenant="a")
    done.state = JobState.SUCCEEDED
    store.create(done)
    assert accounts.running_jobs("a") == 2
    assert accounts.running_jobs("b") == 1
    assert accounts.running_jobs("c") == 0


# -- spend --------------------------------------------------------------------------------------


def _finish(
    store: JobStore,
    tenant: str,
    *rows: tuple[str, float, str],
    reserved: float | None = None,
) -> None:
    """A job of ``tenant`` that ends with one ledger row per (offering, amount, kind)."""
    job = make_job(tenant=tenant)
    store.create(job)
    [claim] = store.claim("w", job_id=job.id)
    claim.job.state = JobState.SUCCEEDED
    claim.job.cost_usd = sum(a for _, a, k in rows if k == "charge")
    claim.job.reserved_usd = reserved
    entries = [LedgerEntry(n, oid, amount, kind) for n, (oid, amount, kind) in enumerate(rows, 1)]
    store.save(claim, ledger=entries)


def test_spend_sums_charges_per_offering_with_the_markup(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("t", budget_usd=10.0, markup=1.5)
    _finish(store, "t", ("off-a", 0.5, "charge"), ("off-b", 0.25, "charge"))
    _finish(store, "t", ("off-a", 1.0, "charge"), ("off-b", 9.0, "void"))
    [row] = accounts.spend("t")
    assert row["tenant"] == "t"
    assert row["budget_usd"] == 10.0
    assert row["reserved_usd"] == 0.0
    assert row["markup"] == 1.5
    assert row["spent_usd"] == pytest.approx(1.75)
    assert row["charged_usd"] == pytest.approx(2.625)
    assert row["pending_usd"] == 0.0
    by = row["by_offering"]
    assert (by["off-a"]["usd"], by["off-a"]["clips"]) == (1.5, 2)
    assert (by["off-b"]["usd"], by["off-b"]["clips"]) == (0.25, 1)  # a void row is no clip


def test_pending_rows_count_in_spend_until_resolved(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("t", markup=2.0)
    _finish(store, "t", ("off-a", 0.5, "charge"), ("off-a", 0.3, "pending"))
    _finish(store, "t", ("off-a", 0.2, "pending"))
    [row] = accounts.spend("t")
    assert row["pending_usd"] == pytest.approx(0.5)
    assert row["spent_usd"] == pytest.approx(1.0)  # never reads low
    assert row["charged_usd"] == pytest.approx(2.0)
    assert row["by_offering"]["off-a"]["clips"] == 1


def test_spend_is_shown_to_the_millionth_of_a_dollar(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("t")
    _finish(store, "t", ("off-a", 0.1, "charge"), ("off-a", 0.2, "charge"))
    _finish(store, "t", ("off-b", 0.1234567, "charge"), ("off-b", 0.7654321, "pending"))
    [row] = accounts.spend("t")
    assert row["by_offering"]["off-a"]["usd"] == 0.3  # not 0.30000000000000004
    assert row["by_offering"]["off-b"]["usd"] == 0.123457
    assert row["pending_usd"] == 0.765432
    assert row["spent_usd"] == 1.188889


def test_spend_is_per_tenant_and_sorted(store: JobStore) -> None:
    accounts = Accounts(store)
    accounts.ensure_tenant("b", budget_usd=3.0)
    accounts.ensure_tenant("a")
    accounts.reserve("a", 0.1234567)
    _finish(store, "a", ("off-a", 1.0, "charge"))
    _finish(store, "b", ("off-b", 2.0, "charge"), ("off-b", 0.5, "pending"))
    # a job of a tenant without a row (made before accounts existed) is still counted
    _finish(store, "ghost", ("off-c", 0.75, "charge"), ("off-c", 0.25, "pending"))
    rows = accounts.spend()
    assert [r["tenant"] for r in rows] == ["a", "b", "ghost"]
    a, b, ghost = rows
    assert a["reserved_usd"] == 0.123457
    assert (a["spent_usd"], a["pending_usd"], list(a["by_offering"])) == (1.0, 0.0, ["off-a"])
    assert (b["spent_usd"], b["pending_usd"], b["budget_usd"]) == (2.5, 0.5, 3.0)
    assert ghost["budget_usd"] is None
    assert ghost["markup"] == 1.0
    assert ghost["reserved_usd"] == 0.0
    assert (ghost["spent_usd"], ghost["pending_usd"]) == (1.0, 0.25)
    assert ghost["charged_usd"] == 1.0
    [only_b] = accounts.spend("b")
    assert only_b["tenant"] == "b"
    assert list(only_b["by_offering"]) == ["off-b"]
    assert only_b["pending_usd"] == 0.5
    assert accounts.spend("nobody") == []


# -- keys ---------------------------------------------------------------------------------------


def test_a_key_authenticates_as_its_tenant_until_revoked(accounts: Accounts) -> None:
    kid, raw = accounts.create_key("acme", rpm=30)
    assert accounts.keys("acme")[0]["rpm"] == 30
    assert raw.startswith(KEY_PREFIX)
    assert len(raw) == len(KEY_PREFIX) + 43  # 256 random bits, URL-safe base64
    assert kid.startswith("key_")
    assert len(kid) == 20
    assert len(raw) > 40
    info = accounts.authenticate(raw)
    assert info is not None
    assert (info.id, info.tenant, info.rpm, info.admin) == (kid, "acme", 30, False)
    assert accounts.tenant("acme") is not None  # the tenant exists once it has a key
    assert accounts.authenticate(raw + "x") is None
    assert accounts.authenticate("") is None
    accounts.revoke_key(kid)
    assert accounts.authenticate(raw) is None


def test_admin_keys_and_the_key_list(accounts: Accounts) -> None:
    kid, raw = accounts.create_key("ops", admin=True)
    other, _ = accounts.create_key("acme")
    info = accounts.authenticate(raw)
    assert info is not None
    assert info.admin is True
    assert info.rpm is None
    [listed] = accounts.keys("ops")
    assert listed["id"] == kid
    assert listed["admin"] is True
    assert listed["revoked"] is False
    assert (listed["tenant"], listed["rpm"]) == ("ops", None)
    assert listed["created_at"] is not None
    assert listed["prefix"] == raw[:10]  # enough to recognise it; never the key itself
    assert "key_hash" not in listed
    assert raw not in listed.values()
    every_key = accounts.keys()
    assert {k["id"] for k in every_key} == {kid, other}
    accounts.revoke_key(other)
    [acme] = accounts.keys("acme")
    assert (acme["tenant"], acme["revoked"]) == ("acme", True)
    assert accounts.authenticate(raw) is not None  # one key's revocation only


# -- Idempotency-Key records --------------------------------------------------------------------


def _age(store: JobStore, tenant: str, key: str, seconds: float) -> None:
    """Back-date a claimed key, as if its request started ``seconds`` ago."""
    i = db.idempotency
    with store.engine.begin() as conn:
        conn.execute(
            update(i)
            .where(i.c.tenant == tenant, i.c.key == key)
            .values(created_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_a_key_replays_its_finished_answer(accounts: Accounts) -> None:
    assert accounts.idem_begin("t", "k", "h1").outcome == "new"
    assert accounts.idem_begin("t", "k", "h1").outcome == "in_progress"
    assert accounts.idem_begin("t", "k", "h2").outcome == "conflict"
    assert accounts.idem_begin("u", "k", "h2").outcome == "new"  # keys are per tenant
    accounts.idem_finish("t", "k", 202, '{"id": "job_1"}')
    st = accounts.idem_begin("t", "k", "h1")
    assert (st.outcome, st.status_code, st.response) == ("replay", 202, '{"id": "job_1"}')
    assert accounts.idem_begin("t", "k", "h2").outcome == "conflict"
    accounts.idem_abort("t", "k")  # a finished key is kept
    assert accounts.idem_begin("t", "k", "h1").outcome == "replay"
    st = accounts.idem_begin("u", "k", "h2")
    assert st.outcome == "in_progress"
    assert st.status_code is None


def test_an_aborted_key_can_run_again(accounts: Accounts) -> None:
    assert accounts.idem_begin("t", "k", "h1").outcome == "new"
    assert accounts.idem_begin("t", "other", "h1").outcome == "new"
    accounts.idem_abort("t", "k")
    assert accounts.idem_begin("t", "k", "h2").outcome == "new"
    assert accounts.idem_begin("t", "other", "h1").outcome == "in_progress"  # that key only
    accounts.idem_finish("t", "k", 201, "{}")
    assert accounts.idem_begin("t", "other", "h1").outcome == "in_progress"  # that key only


def test_a_key_whose_request_died_is_taken_over_once(store: JobStore) -> None:
    accounts = Accounts(store)
    assert accounts.idem_begin("t", "k", "h").outcome == "new"
    _age(store, "t", "k", IDEMPOTENCY_STALE_S - 0.5)
    assert accounts.idem_begin("t", "k", "h").outcome == "in_progress"  # still running
    _age(store, "t", "k", IDEMPOTENCY_STALE_S + 0.5)
    assert accounts.idem_begin("t", "k", "h").outcome == "new"  # its process died
    assert accounts.idem_begin("t", "k", "h").outcome == "in_progress"  # taken over once
    _age(store, "t", "k", IDEMPOTENCY_STALE_S + 0.5)
    assert accounts.idem_begin("t", "k", "other").outcome == "conflict"
    accounts.idem_finish("t", "k", 200, "{}")
    _age(store, "t", "k", IDEMPOTENCY_STALE_S * 10)
    assert accounts.idem_begin("t", "k", "h").outcome == "replay"  # finished: never stale


def test_a_database_in_another_time_zone_does_not_age_keys(pg_url: str) -> None:
    """PostgreSQL hands timestamps back in the session's zone: a key claimed a moment ago on
    a server that runs on New York time is still in progress, not five hours stale."""
    store = JobStore(pg_url + "%20-ctimezone%3DAmerica/New_York")
    try:
        accounts = Accounts(store)
        assert accounts.idem_begin("t", "k", "h").outcome == "new"
        assert accounts.idem_begin("t", "k", "h").outcome == "in_progress"
    finally:
        store.close()
