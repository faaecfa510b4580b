/**
 * `peft forward --model <dir> [--adapter <dir>]... [--adapter-names a,__base__,…] [--merge]
 * --inputs <in.safetensors> --out <out.safetensors>`: the logits of a model, with PEFT adapters,
 * for token ids read from a safetensors file (`input_ids`, optional `attention_mask`, int64
 * [batch, seq]). The logits are written as float32 `logits`, atomically.
 *
 * Adapters are loaded under their folder's name (`--adapter runs/sst2` → `sst2`); the first one is
 * the active adapter, and `default` also names it (PEFT's name for the adapter `from_pretrained`
 * loads; a first folder whose name is not a valid adapter name is loaded as `default`).
 * `--adapter-names` runs a mixed batch (one adapter name per row, `__base__` for none), as PEFT's
 * `model(**inputs, adapter_names=[…])`; `--merge` merges the active adapter into the weights first.
 */
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { AdapterStateError, InputTensorError, MissingFileError, MissingTensorError, ShapeMismatchError } from "../../errors.js";
import { checkOutput } from "../../io/output.js";
import { loadSafetensors, saveSafetensors } from "../../io/safetensors.js";
import { writerMetadata } from "../../io/writer.js";
import { DEFAULT_ADAPTER_NAME, adapterNamesForDirs } from "../../io/peft-files.js";
import type { LoadedModel } from "../../models/load.js";
import { type Tensor, assertFinite } from "../../tensor.js";
import type { CliContext } from "../context.js";
import { addOutputOption } from "../output-option.js";

export { adapterNamesForDirs };

export interface ForwardCommandOptions {
  /** Base model folder (config.json + safetensors). */
  readonly model: string;
  /** PEFT adapter folders, in order; the first is the active adapter. */
  readonly adapters?: readonly string[];
  /** One adapter name per batch row (`__base__` for the base model): a mixed-adapter batch. */
  readonly adapterNames?: readonly string[];
  /** Merge the active adapter into the weights before running (PEFT `merge_adapter`). */
  readonly merge?: boolean;
  /** safetensors file with `input_ids` and optionally `attention_mask` (int64 [batch, seq]). */
  readonly inputs: string;
  /** Where the float32 `logits` go (written atomically). */
  readonly out: string;
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  readonly threads?: number;
  /** Replace an existing `out` (never one of the inputs). */
  readonly overwrite?: boolean;
  /** Accept NaN/±Infinity in the adapters and the logits (default: a `NonFiniteValueError`). */
  readonly allowNonFinite?: boolean;
}

export interface ForwardCommandResult {
  readonly out: string;
  readonly shape: readonly number[];
  /** Loaded adapters: name → folder. */
  readonly adapters: readonly { readonly name: string; readonly dir: string }[];
  readonly active: readonly string[];
  readonly merged: readonly string[];
}

export interface ForwardInputFile {
  readonly inputIds: Tensor<"int64">;
  readonly attentionMask?: Tensor<"int64">;
}

const INPUT_KEYS = ["input_ids", "attention_mask"];

/** Models whose learned position table limits the sequence length. */
const ABSOLUTE_POSITIONS: ReadonlySet<string> = new Set(["bert", "gpt2"]);

/** Reads and checks the token ids (and mask) of an input file. */
export function readForwardInputs(file: string): ForwardInputFile {
  if (!existsSync(file)) throw new MissingFileError(file, "--inputs needs a safetensors file with input_ids (int64 [batch, seq]) and optionally attention_mask");
  const { tensors } = loadSafetensors(file);
  for (const k of tensors.keys()) {
    if (!INPUT_KEYS.includes(k)) throw new InputTensorError(file, k, `not an input of 'peft forward'; the file may hold only ${INPUT_KEYS.join(" and ")}`);
  }
  const ids = tensors.get("input_ids");
  if (!ids) throw new MissingTensorError(file, "input_ids", "write the token ids as int64 [batch, seq] under 'input_ids'");
  const check = (key: string, t: Tensor): Tensor<"int64"> => {
    if (t.dtype !== "int64") throw new InputTensorError(file, key, `must be int64 (torch.long), got ${t.dtype}`);
    if (t.shape.length !== 2) throw new ShapeMismatchError(key, ["batch", "seq"], t.shape, `${file}: token tensors are [batch, seq]`);
    if (t.shape[0] === 0 || t.shape[1] === 0) throw new InputTensorError(file, key, `is empty (shape [${t.shape.join(", ")}])`);
    return t as Tensor<"int64">;
  };
  const inputIds = check("input_ids", ids);
  const maskT = tensors.get("attention_mask");
  if (!maskT) return { inputIds };
  const attentionMask = check("attention_mask", maskT);
  if (attentionMask.shape[0] !== inputIds.shape[0] || attentionMask.shape[1] !== inputIds.shape[1]) {
    throw new ShapeMismatchError("attention_mask", inputIds.shape, attentionMask.shape, `${file}: the mask must have the shape of input_ids`);
  }
  const bad = attentionMask.data.findIndex((v) => v !== 0n && v !== 1n);
  if (bad >= 0) throw new InputTensorError(file, "attention_mask", `element ${bad} is ${attentionMask.data[bad]}; the mask holds 1 (token) or 0 (padding)`);
  return { inputIds, attentionMask };
}

/** Token ids must index the embedding table, and fit the position table where there is one. */
function checkAgainstModel(file: string, inp: ForwardInputFile, model: LoadedModel, extraTokens: number): void {
  const { vocabSize, maxPositionEmbeddings, modelType } = model.config;
  const bad = inp.inputIds.data.findIndex((v) => v < 0n || v >= BigInt(vocabSize));
  if (bad >= 0) {
    const seq = inp.inputIds.shape[1]!;
    throw new InputTensorError(
      file,
      "input_ids",
      `id ${inp.inputIds.data[bad]} at [${Math.floor(bad / seq)}, ${bad % seq}] is outside the vocabulary of ${model.dir} (0…${vocabSize - 1}); tokenize with the model's tokenizer`,
    );
  }
  const length = inp.inputIds.shape[1]! + extraTokens;
  if (ABSOLUTE_POSITIONS.has(modelType) && length > maxPositionEmbeddings) {
    throw new InputTensorError(
      file,
      "input_ids",
      `sequence length ${length}${extraTokens ? ` (with ${extraTokens} virtual tokens)` : ""} exceeds the ${maxPositionEmbeddings} positions of this ${modelType} model; truncate the inputs`,
    );
  }
}

/** Runs the model and writes the logits; returns what was done. */
export async function runForward(opts: ForwardCommandOptions): Promise<ForwardCommandResult> {
  const dirs = opts.adapters ?? [];
  const names = adapterNamesForDirs(dirs);
  if (opts.merge && dirs.length === 0) throw new AdapterStateError(DEFAULT_ADAPTER_NAME, "--merge needs an adapter; pass --adapter <dir>");
  checkOutput({ out: opts.out, kind: "file", inputs: [opts.model, ...dirs, opts.inputs], overwrite: opts.overwrite === true });
  const outDir = dirname(resolve(opts.out));
  if (!existsSync(outDir)) throw new MissingFileError(outDir, "the folder of --out must exist");
  const inputs = readForwardInputs(opts.inputs);

  // the runtime is loaded here, not when the CLI starts (`peft --help` stays fast)
  const [{ SafetensorsWeights, loadModel }, { PeftModel }] = await Promise.all([import("../../models/load.js"), import("../../peft/peft-model.js")]);
  const model = loadModel(opts.model);
  const pm = new PeftModel(model);
  if (opts.threads !== undefined) pm.sessionOptions = { threads: opts.threads };
  try {
    const allowNonFinite = opts.allowNonFinite === true;
    dirs.forEach((dir, i) => pm.loadAdapter(dir, names[i]!, { activate: i === 0, allowNonFinite }));
    const virtual = pm.activeAdapters.reduce((n, a) => {
      const c = pm.adapter(a).config as { numVirtualTokens?: unknown };
      return n + (typeof c.numVirtualTokens === "number" ? c.numVirtualTokens : 0);
    }, 0);
    checkAgainstModel(opts.inputs, inputs, model, opts.adapterNames ? 0 : virtual);
    if (opts.merge) pm.mergeAdapter();
    const first = names[0];
    const rowNames = opts.adapterNames?.map((n) => (n === DEFAULT_ADAPTER_NAME && first !== undefined ? first : n));
    const logits = await pm.forward({ ...inputs, ...(rowNames ? { adapterNames: rowNames } : {}) });
    if (logits.dtype !== "float32") throw new InputTensorError(opts.inputs, "logits", `the model produced ${logits.dtype} logits; expected float32`);
    if (!allowNonFinite) assertFinite([["logits", logits]], "the logits written to --out (pass --allow-non-finite to write them anyway)");
    saveSafetensors(opts.out, { logits }, writerMetadata());
    return {
      out: opts.out,
      shape: [...logits.shape],
      adapters: dirs.map((dir, i) => ({ name: names[i]!, dir })),
      active: rowNames ? [...new Set(rowNames)] : pm.activeAdapters,
      merged: pm.mergedAdapters,
    };
  } finally {
    await pm.dispose();
    if (model.weights instanceof SafetensorsWeights) model.weights.close();
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a positive integer");
  return n;
}

export function register(program: Command, ctx: CliContext): void {
  const cmd = program
    .command("forward")
    .description("run a model (with PEFT adapters) on token ids from a safetensors file and write the logits")
    .requiredOption("--model <dir>", "base model folder (config.json + model.safetensors)")
    .option("--adapter <dir>", "PEFT adapter folder, loaded under its folder name; repeat for several (the first is active)", collect, [])
    .addOption(new Option("--adapter-names <names>", "mixed batch: comma-separated adapter name per row (__base__ = no adapter; default = the first adapter)").conflicts("merge"))
    .option("--merge", "merge the active adapter into the weights before running")
    .requiredOption("--inputs <file>", "safetensors file with input_ids (int64 [batch, seq]) and optionally attention_mask")
    .option("--threads <n>", "onnxruntime intra-op threads", positiveInt)
    .option("--allow-non-finite", "accept NaN/Infinity in the adapters and write non-finite logits (default: an error)")
    .option("--json", "print the summary as JSON");
  addOutputOption(cmd, "where to write the float32 logits (safetensors, tensor 'logits')", { kind: "file" }).action(
    async (o: { model: string; adapter: string[]; adapterNames?: string; merge?: boolean; inputs: string; out: string; overwrite?: boolean; allowNonFinite?: boolean; threads?: number; json?: boolean }) => {
      const res = await runForward({
        model: o.model,
        adapters: o.adapter,
        ...(o.adapterNames !== undefined ? { adapterNames: o.adapterNames.split(",").map((s) => s.trim()) } : {}),
        merge: o.merge === true,
        inputs: o.inputs,
        out: o.out,
        overwrite: o.overwrite === true,
        allowNonFinite: o.allowNonFinite === true,
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
      });
      if (o.json) {
        ctx.json(res);
        return;
      }
      const adapters = res.adapters.map((a) => `${a.name} (${a.dir})`).join(", ") || "none";
      ctx.out(`adapters  ${adapters}`);
      ctx.out(`active    ${res.active.join(", ") || "none (base model)"}${res.merged.length ? `; merged: ${res.merged.join(", ")}` : ""}`);
      ctx.out(`wrote     logits float32 [${res.shape.join(", ")}] to ${res.out}`);
    },
  );
}
