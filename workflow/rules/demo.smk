"""The self-contained demo (config/demo.yaml): a tiny Llama trained on a synthetic language and Medusa-1
heads trained on its greedy continuations, under results/demo/. The demo model is then a measured model
like any other: rule acceptance measures its heads on the held-out prompts, and the sweep, metrics and
figures run on it with trees from that measured table.

Names from common.smk: DEMO (None unless demo.enabled), script_code.
"""

if DEMO:

    rule demo_base:
        """Train the base model on freshly sampled text; save it (safetensors, config.json, tokenizer)
        and the held-out prompts."""
        input:
            code=script_code("demo_base.py"),
        output:
            config=f"{DEMO.checkpoint}/config.json",
            weights=f"{DEMO.checkpoint}/model.safetensors",
            tokenizer=f"{DEMO.checkpoint}/tokenizer.json",
            prompts=DEMO.files["prompts"],
            log_json=DEMO.files["base_log"],
        log:
            "results/logs/demo/base.log",
        benchmark:
            "results/benchmarks/demo/base.tsv"
        conda:
            "../../envs/workflow.yaml"
        threads: DEMO.training["threads"]
        params:
            spec=DEMO.training,
        script:
            "../../scripts/demo_base.py"

    rule demo_heads:
        """Train Medusa heads on the frozen base model's own greedy continuations (Medusa-1)."""
        input:
            config=f"{DEMO.checkpoint}/config.json",
            weights=f"{DEMO.checkpoint}/model.safetensors",
            code=script_code("demo_heads.py"),
        output:
            heads=DEMO.files["heads"],
            log_json=DEMO.files["heads_log"],
        log:
            "results/logs/demo/heads.log",
        benchmark:
            "results/benchmarks/demo/heads.tsv"
        conda:
            "../../envs/workflow.yaml"
        threads: DEMO.training["threads"]
        params:
            spec=DEMO.training,
        script:
            "../../scripts/demo_heads.py"
