/** The only file that knows LoRA's tensor names in PEFT checkpoints. */
export const LORA_PREFIX = "lora_";

export const loraKeys = (module: string) => ({
  A: `${module}.lora_A.weight`,
  B: `${module}.lora_B.weight`,
  magnitude: `${module}.lora_magnitude_vector`,
});

/** The module a LoRA tensor belongs to, or null for other tensors. */
export function loraModuleOf(key: string): string | null {
  const m = key.match(/^(.*)\.(lora_A\.weight|lora_B\.weight|lora_magnitude_vector)$/u);
  return m ? m[1]! : null;
}
