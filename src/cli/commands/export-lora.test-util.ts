/**
 * Checks shared by the LoRA variants' tests (DyLoRA, SoRA, SVFit, Block-LoRA): a short training
 * run on the tiny Llama fixture, then the trained adapter saved, exported with
 * `peft export-lora`, and both folders run through `peft forward` on the same ids: the exported
 * plain LoRA adapter must give the trained adapter's logits.
 */
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "../main.js";
import { runForward } from "./forward.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { PeftModel } from "../../peft/peft-model.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { fixtureModel, maxDiff } from "../../train/method-suite.test-util.js";
import { patternCorpus } from "../../train/tiny-llama.test-util.js";
import { Trainer } from "../../train/trainer.js";
import { fixturePath } from "../../util/paths.js";

export const LLAMA_DIR = fixturePath("peft-parity", "llama", "base");
export const IDS: Tensor<"int64"> = { dtype: "int64", shape: [2, 6], data: BigInt64Array.from([5, 9, 11, 4, 7, 30, 8, 8, 20, 3, 6, 2], BigInt) };

/** A tiny-Llama PeftModel with a fresh `raw` adapter trained for `steps` steps (causal LM, SGD-free AdamW). */
export async function trainedTiny(raw: Readonly<Record<string, unknown>>, steps = 6, lr = 0.02): Promise<{ pm: PeftModel; losses: number[] }> {
  const pm = PeftModel.create(fixtureModel("llama"), raw, "default", { seed: 1 });
  const fit = await new Trainer(pm, { task: "causal-lm", epochs: 100, maxSteps: steps, batchSize: 8, lr, seed: 0, schedule: "constant", dropout: false }, patternCorpus(8, 2, () => 8)).fit();
  return { pm, losses: fit.history.steps.map((s) => s.loss) };
}

/**
 * Save `pm`'s adapter, export it with `peft export-lora` (`--rank` when given), run both through
 * `peft forward` and compare the logits (≤ tol). Returns the exported adapter_config.json.
 */
export async function exportParity(pm: PeftModel, opts: { rank?: number; tol?: number } = {}): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), "peft-variant-export-"));
  try {
    pm.savePretrained(join(dir, "variant"));
    const args = ["export-lora", "--base", LLAMA_DIR, "--adapter", join(dir, "variant"), "--out", join(dir, "lora"), ...(opts.rank !== undefined ? ["--rank", String(opts.rank)] : [])];
    const r = await runCli(args);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(dir, "lora", "adapter_config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(cfg.peft_type, "LORA");
    saveSafetensors(join(dir, "in.safetensors"), { input_ids: IDS });
    await runForward({ model: LLAMA_DIR, adapters: [join(dir, "variant")], inputs: join(dir, "in.safetensors"), out: join(dir, "variant.out.safetensors") });
    await runForward({ model: LLAMA_DIR, adapters: [join(dir, "lora")], inputs: join(dir, "in.safetensors"), out: join(dir, "lora.out.safetensors") });
    const a = toFloat32(loadSafetensors(join(dir, "variant.out.safetensors")).tensors.get("logits")!);
    const b = toFloat32(loadSafetensors(join(dir, "lora.out.safetensors")).tensors.get("logits")!);
    const base = toFloat32((await pm.disableAdapter(() => pm.forward({ inputIds: IDS }))) as Tensor);
    assert.ok(maxDiff(a, base) > 1e-4, "the trained adapter changes the logits (the parity check is not vacuous)");
    const d = maxDiff(a, b);
    assert.ok(d <= (opts.tol ?? 1e-5), `exported LoRA vs trained adapter through peft forward: max |Δ| ${d}`);
    return cfg;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
