"""The sampler's view of a study (search/tune/sampler.py): a trial paused at a rung (RUNNING in Optuna,
with intermediate values) is ranked like a trial stopped there, not as the constant liar's worst;
the store keeps its true state. And search.tune.searcher.close_paused: trials left paused when a search
ends become PRUNED in the store with the fidelity they reached."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from search.results.optuna_store import STEPS_PER_EPOCH, Store
from search.tune.sampler import FidelityAwareTPE, _ReportedAsStopped, make_sampler
from search.tune.searcher import close_paused


def space(trial) -> float:
    return trial.suggest_float("x", 0.0, 1.0)


def test_a_reported_running_trial_is_seen_as_stopped_at_its_fidelity():
    study = optuna.create_study(direction="maximize")
    paused = study.ask()
    space(paused)
    paused.report(0.8, 25)  # paused at the quarter-epoch rung
    fresh = study.ask()  # started, nothing reported yet
    space(fresh)
    view = _ReportedAsStopped(study)
    states = {t.number: t.state for t in view._get_trials(deepcopy=False)}
    assert states == {paused.number: TrialState.PRUNED, fresh.number: TrialState.RUNNING}
    assert [t.number for t in view._get_trials(states=(TrialState.PRUNED,))] == [paused.number]
    # The study itself is unchanged: what the store holds is the truth.
    assert {t.state for t in study.get_trials()} == {TrialState.RUNNING}


def test_tpe_learns_from_paused_trials_where_the_constant_liar_would_not():
    """With 8 paused trials TPE's start-up is over (they count as observed) and it proposes near
    the best of them; Optuna's own TPE would still sample at random, having no finished trial."""
    def run(sampler) -> tuple[float, list[float]]:
        study = optuna.create_study(direction="maximize", sampler=sampler)
        scores = {}
        for _ in range(8):
            t = study.ask()
            x = space(t)
            scores[x] = 1.0 - abs(x - 0.9)
            t.report(scores[x], 25)  # the score at the first rung; the trial stays paused (RUNNING)
        proposals = []
        for _ in range(10):
            t = study.ask()
            proposals.append(space(t))
            study.tell(t, state=TrialState.FAIL)
        return max(scores, key=scores.get), proposals

    best, ours = run(make_sampler("tpe", seed=1, n_startup_trials=6))
    best_plain, plain = run(optuna.samplers.TPESampler(seed=1, n_startup_trials=6, multivariate=True,
                                                       constant_liar=True))
    assert isinstance(make_sampler("tpe", 0, 6), FidelityAwareTPE)
    # Away from the poor region (every paused trial below 0.45 scored under 0.55) at once...
    assert all(x > 0.55 for x in ours) and best > 0.9
    # ...where the constant liar, with nothing finished, still samples at random.
    assert sum(x > 0.55 for x in plain) <= 7


def test_close_paused_prunes_what_was_left_paused(tmp_path):
    store = Store.in_study_folder(tmp_path, "s")
    study = optuna.create_study(study_name="s", storage=store.storage(), direction="maximize")
    trials = {}
    for name, values in (("left", {25: 0.7, 100: 0.8}), ("running", {25: 0.6}), ("fresh", {})):
        t = study.ask()
        space(t)
        t.set_user_attr("tune_trial_id", name)
        for step, value in values.items():
            t.report(value, step)
        trials[name] = t.number
    assert close_paused(store, {"left", "fresh"}) == 1  # one with nothing reported is not closed
    after = {t.user_attrs["tune_trial_id"]: t for t in store.load().trials}
    left = after["left"]
    assert left.state == TrialState.PRUNED and left.user_attrs["paused"] is True
    assert left.user_attrs["epochs_seen"] == 100 / STEPS_PER_EPOCH == 1.0
    assert left.user_attrs["best_score"] == 0.8 and left.user_attrs["best_epochs"] == 1.0
    assert after["running"].state == TrialState.RUNNING and after["fresh"].state == TrialState.RUNNING
