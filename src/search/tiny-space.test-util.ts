/** A tiny space: LoRA or (IA)³ on a 2-layer BERT, layers on/off, two module groups, a learning-rate range. */
export const TINY_SPACE = {
  objectives: ["accuracy", "trainable_params"],
  methods: ["lora", "ia3"],
  layers: [0, 1],
  groups: { attention: { targets: ["query", "value"], ranks: [0, 2, 4] }, ffn: { targets: ["intermediate.dense"], ranks: [0, 2], feedforward: true } },
  lr: [0.005, 0.05],
  fidelity: { epochs: 1, max_examples: 60 },
  train: { batch_size: 8, seed: 0 },
};
