/**
 * Model and adapter files held in memory, by name: what a browser has after a file picker, a
 * drop or a `fetch` (peft-ts/web reads everything this way; Node can too). A PEFT adapter folder
 * is the map `adapter_config.json` → bytes, `adapter_model.safetensors` → bytes.
 */
import { MissingFileError } from "../errors.js";
import type { Tensor } from "../tensor.js";
import { parseJsonObjectText } from "./json-file.js";
import { ADAPTER_CONFIG_NAME, ADAPTER_PICKLE_NAME, ADAPTER_WEIGHTS_NAME, type AdapterFiles, formatAdapterConfig } from "./peft-files.js";
import { parseSafetensors, serializeSafetensors, type TensorMapLike } from "./safetensors.js";
import { writerMetadata } from "./writer.js";

/** File name (relative, `/`-separated) → contents. */
export type FileMap = ReadonlyMap<string, Uint8Array>;

/**
 * The files of one folder in `files`: names relative to the folder that holds `marker` (a folder
 * picker gives `my-adapter/adapter_config.json`; a zip may nest one level). Names already at the
 * top are kept as they are.
 */
export function folderFiles(files: FileMap, marker: string): Map<string, Uint8Array> {
  if (files.has(marker)) return new Map(files);
  const hit = [...files.keys()].filter((k) => k === marker || k.endsWith(`/${marker}`)).sort((a, b) => a.length - b.length)[0];
  if (hit === undefined) return new Map(files);
  const prefix = hit.slice(0, hit.length - marker.length);
  return new Map([...files].filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]));
}

/** One file's bytes; absent → `MissingFileError` naming `label/name`. */
export function fileBytes(files: FileMap, name: string, label: string, hint = ""): Uint8Array {
  const b = files.get(name);
  if (!b) throw new MissingFileError(`${label}/${name}`, hint);
  return b;
}

/** One file as UTF-8 text. */
export function fileText(files: FileMap, name: string, label: string, hint = ""): string {
  return new TextDecoder().decode(fileBytes(files, name, label, hint));
}

/** A JSON object file. */
export function fileJsonObject(files: FileMap, name: string, label: string, hint = ""): Record<string, unknown> {
  return parseJsonObjectText(fileText(files, name, label, hint), `${label}/${name}`);
}

/** The counterpart of `readAdapterDir` for files in memory (`label` names the folder in errors). */
export function adapterFromFiles(files: FileMap, label = "adapter"): AdapterFiles {
  const inFolder = folderFiles(files, ADAPTER_CONFIG_NAME);
  const configFile = `${label}/${ADAPTER_CONFIG_NAME}`;
  const weightsFile = `${label}/${ADAPTER_WEIGHTS_NAME}`;
  const configRaw = fileJsonObject(inFolder, ADAPTER_CONFIG_NAME, label, "a PEFT adapter folder needs adapter_config.json (written by PeftModel.save_pretrained)");
  const hint = inFolder.has(ADAPTER_PICKLE_NAME)
    ? `found ${ADAPTER_PICKLE_NAME}, but only safetensors is supported; save it again with save_pretrained(..., safe_serialization=True)`
    : "a PEFT adapter folder needs adapter_model.safetensors next to adapter_config.json";
  const { tensors, metadata } = parseSafetensors(fileBytes(inFolder, ADAPTER_WEIGHTS_NAME, label, hint), weightsFile);
  return { configRaw, configFile, weights: tensors, weightsFile, weightsMetadata: metadata };
}

/** The counterpart of `writeAdapterDir` in memory: the two files of a PEFT adapter folder. */
export function adapterToFiles(
  configRaw: Readonly<Record<string, unknown>>,
  weights: TensorMapLike,
  metadata: Readonly<Record<string, string>> = { format: "pt" },
): Map<string, Uint8Array> {
  const config = new TextEncoder().encode(formatAdapterConfig(configRaw));
  return new Map([
    [ADAPTER_CONFIG_NAME, config],
    [ADAPTER_WEIGHTS_NAME, serializeSafetensors(weights, writerMetadata(metadata))],
  ]);
}

/** Tensors of a safetensors file in `files`. */
export function safetensorsFromFiles(files: FileMap, name: string, label: string): Map<string, Tensor> {
  return parseSafetensors(fileBytes(files, name, label), `${label}/${name}`).tensors;
}
