/**
 * The LoRA variants (DyLoRA, SoRA, SVFit, Block-LoRA) as plain PEFT LoRA adapters: the tuner's
 * `toLora` gives the LoRA config and factors (DyLoRA at any rank, SoRA's pruned ranks with
 * `rank_pattern`), checked here against the base model like any loaded LoRA adapter, so the
 * result serves, merges and compresses as LoRA does.
 */
import { UnsupportedOptionError } from "../errors.js";
import type { FileMap } from "../io/file-map.js";
import type { AdapterInstance } from "../tuners/common/types.js";
import { tunerFor } from "../tuners/registry.js";
import { adapterFileMap, inConfig, saveAdapterDir, validateAdapter } from "./adapter-io.js";
import type { PeftModel } from "./peft-model.js";

/** Adapter `adapterName` of `model` as a PEFT LoRA adapter instance (`rank`: DyLoRA's rank to keep). */
export function loraExportOf(model: PeftModel, adapterName: string, opts: { rank?: number | null } = {}): AdapterInstance {
  const a = model.adapter(adapterName);
  if (!a.tuner.toLora) {
    throw new UnsupportedOptionError(`adapter '${adapterName}'`, "export as LoRA", a.tuner.peftType, "only the LoRA variants (dylora, sora, svfit, block-lora) export as a plain LoRA adapter");
  }
  const e = a.tuner.toLora(a, model.info, { rank: opts.rank ?? null });
  const lora = tunerFor("LORA");
  const file = `${adapterName} as LoRA`;
  return inConfig(file, () => {
    const config = lora.resolve(lora.parseConfig(e.raw, file), model.info);
    const out: AdapterInstance = { name: adapterName, tuner: lora, config, tensors: e.tensors };
    validateAdapter(out, model.info, file);
    return out;
  });
}

/** Write adapter `adapterName` as a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors). */
export function saveAsLora(model: PeftModel, adapterName: string, dir: string, opts: { rank?: number | null } = {}): AdapterInstance {
  const a = loraExportOf(model, adapterName, opts);
  saveAdapterDir(dir, a);
  return a;
}

/** The LoRA export's files in memory (load them with `model.loadAdapterFromFiles`). */
export function loraExportFiles(model: PeftModel, adapterName: string, opts: { rank?: number | null } = {}): FileMap {
  return adapterFileMap(loraExportOf(model, adapterName, opts));
}
