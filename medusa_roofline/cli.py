"""Command line: ``medusa-roofline <subcommand> ...`` (or ``python -m medusa_roofline ...``).

Each subcommand is a ``(add_arguments, run)`` pair in ``SUBCOMMANDS``; ``run`` gets the parsed
arguments and returns an exit status. A ConfigError anywhere becomes one line on stderr and exit 2
(an IntegrityError, input that failed its integrity checks: exit 3).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from . import __version__
from .core.dtypes import ALIASES as DTYPES
from .core.errors import EXIT_BAD_INPUT, EXIT_DIFFERENT, EXIT_TAMPERED, ConfigError, IntegrityError


def _positive(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {text!r} is not an integer") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name}: must be >= 1, got {value}")
        return value
    return parse


def add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="preset name or local HF Llama directory (default tiny)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--candidates", type=_positive("candidates"), default=16,
                       help="greedy tree of this many query tokens, root included, built from the acceptance table "
                            "(default 16)")
    which.add_argument("--tree", default=None,
                       help="tree file: YAML/JSON list of Medusa medusa_choices-style paths, e.g. "
                            "config/trees/mc_sim_7b_63.yaml (format: config/trees/README.md)")
    p.add_argument("--max-new-tokens", type=_positive("max-new-tokens"), default=64)
    p.add_argument("--batch", type=_positive("batch"), default=None,
                   help="rows (default: one per --prompt-len value, else 1)")
    p.add_argument("--prompt-len", type=_positive("prompt-len"), nargs="+", default=[8],
                   help="prompt length; several values give rows of different lengths, cycled over the rows and "
                        "left-padded (ragged batch)")
    p.add_argument("--heads", default=None, help="Medusa heads file (.safetensors or torch.save); random if omitted")
    p.add_argument("--num-heads", type=_positive("num-heads"), default=None,
                   help="random heads to build (default: the acceptance table's head count)")
    p.add_argument("--top-k", type=_positive("top-k"), default=10,
                   help="ranks each head proposes; a --tree rank must be below it (default 10, Medusa's)")
    p.add_argument("--acceptance", default=None, help="acceptance CSV (head,rank,accuracy); default table if omitted")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)


def run_generate(args) -> int:
    """Medusa vs. plain greedy decoding on random prompts: same tokens? how many per step?"""
    import torch

    from .decoding.heads import load_medusa_heads, random_heads
    from .decoding.medusa import greedy_generate, medusa_generate, pad_prompts
    from .decoding.tree import load_acceptance_table, tree_paths_for
    from .models.load import build_model

    dtype = getattr(torch, DTYPES[args.dtype])
    table = load_acceptance_table(args.acceptance)
    if args.tree:  # a bad tree file stops here, before any model is built
        tree_paths_for(args.tree, top_k=args.top_k)
    model = build_model(args.model, dtype, device=args.device, seed=args.seed)
    if args.heads:
        heads = load_medusa_heads(args.heads, model.config.hidden_size, model.config.vocab_size,
                                  dtype=dtype, device=args.device)
    else:
        heads = random_heads(model, num_heads=args.num_heads or table.shape[0], seed=args.seed)
    limit = getattr(model.config, "max_position_embeddings", None)
    if args.tree:
        tree = tree_paths_for(args.tree, num_heads=heads.num_heads, top_k=min(args.top_k, model.config.vocab_size),
                              max_nodes=limit)
    else:
        tree = tree_paths_for(args.candidates, table, max_nodes=limit)
    batch = args.batch or len(args.prompt_len)
    lengths = [args.prompt_len[i % len(args.prompt_len)] for i in range(batch)]
    gen = torch.Generator().manual_seed(args.seed)
    rows = [torch.randint(0, model.config.vocab_size, (n,), generator=gen).tolist() for n in lengths]
    prompt, mask = pad_prompts(rows, device=args.device)
    mask = None if len(set(lengths)) == 1 else mask

    medusa_tokens, m = medusa_generate(model, heads, prompt, tree.paths, args.max_new_tokens, attention_mask=mask)
    greedy_tokens, g = greedy_generate(model, prompt, args.max_new_tokens, attention_mask=mask)
    same = torch.equal(medusa_tokens, greedy_tokens)
    shown = ",".join(map(str, lengths)) if mask is not None else str(lengths[0])
    print(f"model {args.model}  batch {batch}  prompt {shown}  new tokens {args.max_new_tokens}  "
          f"tree {tree.name}: {tree.candidates} nodes (depth {tree.depth})")
    print(f"identical: {'yes' if same else 'no'}")
    print(f"medusa: {m.mean_accepted:.3f} tokens/step  {m.steps} steps  {m.wall_s:.3f} s")
    print(f"greedy: {g.mean_accepted:.3f} tokens/step  {g.steps} steps  {g.wall_s:.3f} s")
    return 0 if same else 1


REGENERATE_EXIT = {
    0: "every figure redrawn, every points CSV byte-identical to the archive, manifest intact",
    EXIT_DIFFERENT: "regenerated but different: a points CSV differs from the archive's, or a figure could "
                    "not be redrawn",
    EXIT_BAD_INPUT: "not an archive or unreadable, or bad arguments; nothing was written",
    EXIT_TAMPERED: "tampered or unsafe archive (a file differs from its sha256; a malformed manifest, "
                   "inputs.json or recipe; a member that is a link or has an absolute, drive or '..' name; "
                   "a file not in the manifest; a path outside the archive or --out); nothing was written",
}
"""What each exit status of ``regenerate`` means (printed by its ``--help``)."""


def add_regenerate(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = "exit status:\n" + "\n".join(textwrap.fill(text, 96, initial_indent=f"  {code}  ", subsequent_indent="     ")
                                              for code, text in REGENERATE_EXIT.items())
    p.add_argument("archive", help="a run archive (results/archive/<run_name>.tar.gz) or the directory it was "
                   "unpacked to")
    p.add_argument("--out", default="regenerated",
                   help="where the figures, points CSVs go, at their results/... paths (default ./regenerated)")
    p.add_argument("--formats", nargs="+", default=None, choices=["pdf", "svg", "png"],
                   help="figure formats (default: those of each recipe)")


def run_regenerate(args) -> int:
    """Redraw every figure of a run archive from its recipes alone (no model, no GPU) and compare."""
    import logging

    from .repro.archive import regenerate

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = regenerate(args.archive, args.out, args.formats)
    for reason in result.rejected:
        print(f"rejected: {reason}", file=sys.stderr)
    for name in result.manifest_errors:
        print(f"manifest: {name} does not match its sha256 (changed or missing)", file=sys.stderr)
    if result.tampered:
        print(f"the archive failed its integrity checks; nothing was written to {args.out}", file=sys.stderr)
        return result.exit_status
    for fig in result.figures:
        print(f"{'identical' if fig['identical'] else 'MISMATCH '}  {fig['points']}  ({fig['kind']})")
    for err in result.errors:
        print(f"error: {err}", file=sys.stderr)
    n, same = len(result.figures), sum(f["identical"] for f in result.figures)
    print(f"{n} figures redrawn into {args.out}; {same} of {n} points CSVs byte-identical to the archive; "
          "manifest intact")
    files = [f for fig in result.figures for f in fig["figure_files"]]
    same_files = sum(len(fig["figure_files_identical"]) for fig in result.figures)
    print(f"figure files byte-identical to the archive: {same_files} of {len(files)} "
          "(informational: fonts and library versions change image bytes, not the points)")
    if result.mismatches:
        print("mismatches: " + ", ".join(result.mismatches), file=sys.stderr)
    return result.exit_status


def add_acceptance(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="local HF Llama checkpoint directory (or a preset)")
    p.add_argument("--heads", required=True, help="Medusa heads file (.safetensors or torch.save'd state dict)")
    p.add_argument("--prompts", default=None, help="prompt file: JSONL (input_ids or prompt/text) or plain text, "
                   "one prompt per line; seeded random token ids if omitted")
    p.add_argument("--tokenizer", default=None, help="local tokenizer directory (default: the model's, if saved)")
    p.add_argument("--random-prompts", type=_positive("random-prompts"), default=32)
    p.add_argument("--prompt-len", type=_positive("prompt-len"), default=16, help="length of random prompts")
    p.add_argument("--max-new-tokens", type=_positive("max-new-tokens"), default=64)
    p.add_argument("--top-k", type=_positive("top-k"), default=10)
    p.add_argument("--candidates", type=_positive("candidates"), nargs="+", default=[16],
                   help="tree sizes (root included) to run real generation with")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="directory for acceptance.csv, generation.csv, acceptance.json")


def print_acceptance(table, generation, ranks: int = 3) -> None:
    """The first ``ranks`` ranks of every head with their Wilson 95 % interval, then real generation."""
    print(f"acceptance per head (rank: accuracy [Wilson 95 % CI]), {int(table['total'].iloc[0])} positions for head 0")
    for head, rows in table.groupby("head"):
        cells = [f"r{int(r['rank'])} {r['accuracy']:.3f} [{r['ci95_low']:.3f}, {r['ci95_high']:.3f}]"
                 for _, r in rows.head(ranks).iterrows()]
        print(f"  head {head}: " + "  ".join(cells))
    print("real Medusa generation vs the independence prediction (tokens per step, root included)")
    for _, g in generation.iterrows():
        print(f"  {int(g['candidates']):3d} candidates (depth {int(g['depth'])}): real {g['tokens_per_step']:.3f} "
              f"[{g['tokens_per_step_ci95_low']:.3f}, {g['tokens_per_step_ci95_high']:.3f}]  predicted "
              f"{g['expected_tokens_per_step']:.3f}  identical to greedy: "
              f"{'yes' if g['identical_to_greedy'] else 'NO'}")


def run_acceptance(args) -> int:
    """Measure a local base model + Medusa heads: per-head acceptance table and real tokens per step."""
    from pathlib import Path

    from .decoding.acceptance import acceptance_from_files, write_result

    result = acceptance_from_files(args.model, args.heads, args.prompts, args.tokenizer,
                                   random_spec=(args.random_prompts, args.prompt_len), seed=args.seed,
                                   max_new_tokens=args.max_new_tokens, top_k=args.top_k,
                                   candidates=args.candidates, dtype=args.dtype, device=args.device)
    out = Path(args.out)
    write_result(result, out / "acceptance.csv", out / "generation.csv", out / "acceptance.json")
    print_acceptance(result.table, result.generation)
    print(f"wrote {out / 'acceptance.csv'}, {out / 'generation.csv'}, {out / 'acceptance.json'}")
    return 0 if result.generation["identical_to_greedy"].all() else 1


def add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/demo-cli", help="output directory (default results/demo-cli)")
    p.add_argument("--seed", type=int, default=0)


def run_demo(args) -> int:
    """Train a tiny base model and Medusa heads locally, measure acceptance, tokens/step and speedup."""
    import logging

    from .demo import DemoSpec
    from .demo import run_demo as demo

    logging.basicConfig(level=logging.WARNING)
    spec = DemoSpec.from_dict({"seed": args.seed})
    done = demo(args.out, spec)
    summary = done["summary"]
    print_acceptance(done["table"], done["generation"])
    print("measured speedup on this CPU (median step times; p10-p90 band)")
    for _, r in done["speedup"].iterrows():
        print(f"  kv_len {int(r['kv_len']):4d}  {int(r['candidates']):3d} candidates  {r['acceptance']:15s}  "
              f"tokens/step {r['expected_tokens']:.3f}  step ratio {r['latency_ratio']:.2f}  speedup "
              f"{r['speedup']:.2f} [{r['speedup_p10']:.2f}, {r['speedup_p90']:.2f}]")
    tree = summary["default_tree"]
    print(f"default demo tree ({tree['candidates']} candidates): {tree['tokens_per_step']:.3f} tokens/step "
          f"(predicted {tree['expected_tokens_per_step']:.3f}); whole demo {summary['seconds']:.1f} s; "
          f"files in {args.out}")
    return 0 if done["generation"]["identical_to_greedy"].all() else 1


SUBCOMMANDS = {
    "generate": (add_generate, run_generate),
    "regenerate": (add_regenerate, run_regenerate),
    "acceptance": (add_acceptance, run_acceptance),
    "demo": (add_demo, run_demo),
}


def main(argv=None, prog: str = "medusa-roofline") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Medusa decoding and run archives of the medusa-roofline workflow "
        "(the workflow itself runs with `snakemake --cores all` in a clone).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, run) in SUBCOMMANDS.items():
        add(sub.add_parser(name, help=(run.__doc__ or "").strip().splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][1](args)
    except IntegrityError as err:
        print(f"rejected: {err}", file=sys.stderr)
        return EXIT_TAMPERED
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

