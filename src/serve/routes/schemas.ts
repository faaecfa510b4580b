/** Request fields the generation endpoints share (OpenAI's, plus vLLM's sampling extras). */
import { z } from "zod";

export const SamplingSchema = z.object({
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(-1).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  repetition_penalty: z.number().gt(0).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(16)]).nullish(),
  stop_token_ids: z.array(z.number().int().nonnegative()).nullish(),
  ignore_eos: z.boolean().nullish(),
  seed: z.number().int().nullish(),
});
