"""The units of a threshold-dimension run (`gzone.studies.threshold_dimension`), computed on demand:
the full-space baseline, the lottery basis, the burn-in anchors, the subspace runs and the quadratic-
well spectra of the Gordon prediction, with the jitted functions they share."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from gzone import problem as problem_lib
from gzone import projections, seeds, train
from gzone.analysis import gordon, subspaces
from gzone.curvature import wells
from gzone.runs import engine as engine_lib

UNIT = re.compile(r"^(t\d+|lottery)_d(\d+)$")  # the subspace units' names


def unit_name(start: str, d: int) -> str:
    return f"{start}_d{d}"


def _missing():
    raise RuntimeError("a unit of the threshold-dimension run is missing at assembly")


class Units:
    """The run's units on demand (`Engine.unit`): baseline, lottery basis, burn-in anchors and subspace
    runs, with the jitted functions they share."""

    def __init__(self, engine: engine_lib.Engine, prob: problem_lib.Problem, data: train.Data,
                 opts, *, full_spec: train.TrainSpec, seed_mode: str):
        self.engine, self.data, self.opts = engine, data, opts
        fm, S, N = prob.fm, opts.num_seeds, data.x_train.shape[0]
        self.keys = keys = seeds.SeedKeys.from_seed(opts.seed)
        self.k_train = keys.train_keys(S)
        self.theta0 = jax.jit(jax.vmap(prob.sample_fn(opts.init)))(keys.init_keys(S))
        index = seeds.pick_examples(keys.k_data, N, min(opts.n_train_eval or N, N))
        self.x_eval, self.y_eval = data.x_train[index], data.y_train[index]
        sub_spec = opts.train_spec(N, mode="hyperplane")
        full, sub = train.make_trainer(fm, full_spec), train.make_trainer(fm, sub_spec)
        mode = seed_mode
        self.full_init = jax.jit(jax.vmap(full.init))
        self.full_run = jax.jit(seeds.map_seeds(lambda st, k, e0, data, n: full.run(st, k, data, None, e0, n),
                                                mode), static_argnums=4)
        steps = train.make_step_runner(fm, full_spec)
        self.burn = jax.jit(seeds.map_seeds(lambda st, k, data, n: steps(st, k, data, None, n), mode),
                            static_argnums=3)
        evaluate = lambda th, x, y: train.evaluate(fm, th, x, y, full_spec.eval_chunk)  # noqa: E731
        self.eval_theta = jax.jit(jax.vmap(evaluate, in_axes=(0, None, None)))
        self.sub_init = jax.jit(jax.vmap(sub.init))
        self._sub_runs, self._sub_args = {}, (fm, N, mode)
        self.sub_theta = jax.jit(jax.vmap(sub.theta))
        kind = opts.projection
        self.random_spaces = jax.jit(
            lambda anchors, k_proj, d: jax.vmap(lambda a, k: subspaces.random_space(k, a, kind=kind, d=d))(
                anchors, k_proj), static_argnums=2)
        self._trained = None

    def sub_run(self, d: int):
        """The jitted subspace trainer at dimension d (one per lr: `ThresholdOptions.subspace_lr`)."""
        lr = self.opts.subspace_lr(d)
        if lr not in self._sub_runs:
            fm, N, mode = self._sub_args
            sub = train.make_trainer(fm, self.opts.train_spec(N, mode="hyperplane", lr=lr))
            self._sub_runs[lr] = jax.jit(seeds.map_seeds(
                lambda st, k, sp, e0, data, n: sub.run(st, k, data, sp, e0, n), mode, per_seed=3),
                static_argnums=5)
        return self._sub_runs[lr]

    def fit(self, name: str, run_fn, state0):
        return self.engine.fit(name, run_fn, state0, epochs=self.opts.epochs,
                               epochs_per_call=self.opts.epochs_per_call)

    def evaluate(self, thetas) -> dict:
        loss, acc = self.eval_theta(thetas, self.x_eval, self.y_eval)
        return {"train_loss": np.asarray(loss), "train_accuracy": np.asarray(acc)}

    def _train_baseline(self):
        if self._trained is None:
            run_fn = lambda st, e0, n: self.full_run(st, self.k_train, e0, self.data, n)  # noqa: E731
            self._trained = self.fit("baseline", run_fn, self.full_init(self.theta0))
        return self._trained

    def baseline(self) -> dict:
        """Full-space training of every seed from theta_0 (with ``lottery``, its basis unit first)."""
        if self.opts.lottery:
            self.engine.unit("lottery_basis", self._lottery_basis,
                             what=lambda a, r: f"rank {r['rank']} from {r['snapshots']} snapshots")

        def compute():
            state, hist = self._train_baseline()
            out = {"test_accuracy": hist["test_accuracy"], "train_loss_curve": hist["loss"],
                   **{f"final_{k}": v for k, v in self.evaluate(state.params).items()}}
            if self.opts.gordon_seeds:  # the solutions theta* the prediction's quadratic wells sit at
                out["theta_final"] = np.asarray(state.params)[: self.opts.gordon_seeds]
            out["final_test_accuracy"] = hist["test_accuracy"][:, -1]
            return out, {"final_test_accuracy": out["final_test_accuracy"]}

        return self.engine.unit("baseline", compute, what=lambda a, r: "full-space test accuracy "
                                f"{np.mean(a['final_test_accuracy']):.4f}")

    def _lottery_basis(self):
        snaps = self._train_baseline()[1]["snapshots"]  # [S, epochs, n_snap, D]
        moves = snaps.reshape(snaps.shape[0], -1, snaps.shape[-1]) - np.asarray(self.theta0)[:, None]
        bases = [subspaces.lottery_basis(m, centred=self.opts.lottery_pca == "centred") for m in moves]
        rank = min(b.directions.shape[1] for b in bases)
        return ({"directions": np.stack([b.directions[:, :rank] for b in bases]),
                 "singular_values": np.stack([b.singular_values[:rank] for b in bases])},
                {"rank": rank, "snapshots": moves.shape[1]})

    def anchors(self, t0: int) -> dict:
        """theta after t0 full-space steps (the baseline's first t0 steps), with its metrics."""

        def compute():
            state = self.full_init(self.theta0)
            if t0 > 0:
                state, _ = self.burn(state, self.k_train, self.data, t0)
            _, test_acc = self.eval_theta(state.params, self.data.x_test, self.data.y_test)
            out = {"anchor": np.asarray(state.params), "test_accuracy": np.asarray(test_acc),
                   **self.evaluate(state.params)}
            return out, {"t0": t0, "test_accuracy": out["test_accuracy"]}

        return self.engine.unit(f"burnin_t{t0}", compute,
                                what=lambda a, r: f"test accuracy {np.mean(a['test_accuracy']):.4f}")

    def subspace(self, start: str, d: int, *, wait: bool = True) -> dict | None:
        """S seeds trained in d-dimensional subspaces through a start point (one unit; None when it is
        another process's and not `wait`)."""
        name = unit_name(start, d)

        def compute():
            S, dtype = self.opts.num_seeds, self.theta0.dtype
            if start == "lottery":
                basis = self.engine.unit("lottery_basis", _missing)["directions"][:, :, :d]
                spaces = train.Space(self.theta0, projections.Dense(jnp.asarray(basis, dtype)))
            else:
                anchors = jnp.asarray(self.anchors(int(start[1:]))["anchor"])
                spaces = self.random_spaces(anchors, self.keys.proj_keys(d, S), d)
            state0 = self.sub_init(jnp.zeros((S, d), dtype), spaces)
            sub_run = self.sub_run(d)
            run_fn = lambda st, e0, n: sub_run(st, self.k_train, spaces, e0, self.data, n)  # noqa: E731
            state, hist = self.fit(name, run_fn, state0)
            final = self.evaluate(self.sub_theta(state, spaces))
            acc = hist["test_accuracy"]
            out = {"final_test_accuracy": acc[:, -1], "test_accuracy": acc, "train_loss_curve": hist["loss"],
                   **{f"final_{k}": v for k, v in final.items()}}
            return out, {"start": start, "d": d, "final_test_accuracy": out["final_test_accuracy"],
                         "final_train_loss": out["final_train_loss"]}

        return self.engine.unit(name, compute, what=lambda a, r: "test accuracy "
                                f"{np.mean(a['final_test_accuracy']):.4f}, train loss "
                                f"{np.mean(a['final_train_loss']):.4f}", wait=wait)


    def gordon(self, prob: problem_lib.Problem, anchors: list[dict], analysis: dict) -> dict:
        """The quadratic-well prediction of d* (`analysis.gordon`) at the baseline's solutions, from every
        burn-in start; adds its rows to `analysis` and returns its arrays."""
        o, G = self.opts, self.opts.gordon_seeds
        measure = jax.jit(lambda k, th, st: wells.well_spectrum(
            k, prob.fm, th, self.x_eval, self.y_eval, st, top_k=o.gordon_top_k, order=o.gordon_order,
            probes=o.gordon_probes, matrix=o.gordon_matrix))

        def compute():
            theta_star = self.engine.unit("baseline", _missing)["theta_final"]
            keys = jax.random.split(jax.random.fold_in(self.keys.k_data, 2), G)
            per_seed = [measure(keys[g], jnp.asarray(theta_star[g]),
                                jnp.stack([jnp.asarray(a["anchor"][g]) for a in anchors])) for g in range(G)]
            return {k: np.stack([np.asarray(w[k]) for w in per_seed]) for k in per_seed[0]}, {"seeds": G}

        well = self.engine.unit("gordon_well", compute,
                                what=lambda a, r: f"top eigenvalue {a['top'][:, 0].mean():.4g}")
        pred = gordon.predictions(well, targets=o.targets, dimension=prob.fm.D)
        found = {(row["target"], row["start"]): row for row in analysis["thresholds"]}
        analysis["gordon"] = [
            {"target": t, "start": f"t{t0}", "measured_threshold": found[t, f"t{t0}"]["threshold"],
             "measured_below": found[t, f"t{t0}"]["below"], "solution_loss": pred["loss"].tolist(),
             "top_eigenvalue": pred["top"].tolist(), "distance": pred["distance"][si].tolist(),
             "start_loss": anchors[si]["train_loss"][:G].tolist(),
             "quadratic_start_loss": (pred["loss"] + 0.5 * pred["distance"][si] ** 2
                                      * pred["start_curvature"][si]).tolist(),
             "line_loss": pred["line_loss"][si].tolist(), "line_fractions": list(wells.FRACTIONS),
             **{k: _mean_finite(pred[k][ti, si]) for k in ("epsilon", "cone", "larsen")},
             **{f"{k}_seeds": pred[k][ti, si].tolist() for k in ("cone", "larsen", "beta", "mu0")}}
            for ti, t in enumerate(o.targets) for si, t0 in enumerate(o.burn_in)]
        fractions = np.asarray(wells.FRACTIONS)
        return {**{f"gordon_{k}": v for k, v in pred.items()}, "gordon_fractions": fractions}


def _mean_finite(values) -> float:
    """The mean of the finite values (NaN where a target has no well at any seed: the solution's loss is
    above it), without numpy's empty-slice warning."""
    v = np.asarray(values, np.float64)
    finite = np.isfinite(v)
    return float(v[finite].mean()) if finite.any() else float("nan")
