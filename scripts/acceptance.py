"""Snakemake entry: the acceptance table and real tokens per step of one model's Medusa heads."""

import torch

from medusa_roofline.decoding.acceptance import acceptance_from_files, write_result
from medusa_roofline.entry import logged

with logged(snakemake) as log:  # noqa: F821 (injected by Snakemake)
    p = snakemake.params  # noqa: F821
    inp = snakemake.input  # noqa: F821
    out = snakemake.output  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    result = acceptance_from_files(
        p.source,
        inp.heads,
        inp.prompts or None,
        p.tokenizer,
        random_spec=(p.random_prompts, p.prompt_len),
        seed=p.seed,
        max_new_tokens=p.max_new_tokens,
        top_k=p.top_k,
        candidates=p.candidates,
        dtype=p.dtype,
        device=p.device,
    )
    log.info("top-1 accuracy per head: %s", result.summary["top1_accuracy"])
    for _, row in result.generation.iterrows():
        log.info("%d candidates: %.3f tokens/step (independence predicts %.3f), identical to greedy: %s",
                 row["candidates"], row["tokens_per_step"], row["expected_tokens_per_step"],
                 row["identical_to_greedy"])
    write_result(result, out.table, out.generation, out.summary)
