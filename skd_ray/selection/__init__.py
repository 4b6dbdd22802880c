"""Acting on a finished search: choosing, retraining and shipping its best configurations.

Owns: the final evaluation (`final_eval`, `final_summary`: the best configurations retrained
on train+validation per seed and scored once on the test split), `--export-best` (`export`),
the multi-objective search's objectives and Pareto front (`multi_objective`, `pareto`), and
the fair comparison of methods (`comparison/`: equal-budget searches, seed-averaged retraining,
statistics against vanilla).
May import every layer below; reaches Ray only through `skd_ray.search.tuning.tuner.run_search`,
imported where a final evaluation starts.
"""
