export { DEFAULT_ITL_SLO_MS, createServer, type PeftServer, type ServeOptions, type ServeAdapterSpec } from "./server.js";
export { DEFAULT_MODEL_ID, type ServedModel } from "./model-host.js";
export { AdapterRegistry, type AdapterHost, type AdapterInfo, type Lease } from "./adapters.js";
export { mapError, type OpenAiErrorBody } from "./http-errors.js";
