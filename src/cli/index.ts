export { main, runCli, buildProgram, reportError, packageVersion, COMMANDS, type CliRunResult } from "./main.js";
export { createContext, processIo, type CliContext, type CliIo, type CommandModule } from "./context.js";
export { inspectPath, type InspectReport, type InspectOptions } from "./inspect/inspect.js";
export { inspectModelDir, inspectSafetensorsFile, moduleRole, modelWeightFiles, MODEL_ROLES, type ModelReport, type ModelRole, type SafetensorsReport } from "./inspect/model.js";
export { inspectAdapterDir, type AdapterReport, type AdapterTensorGroup } from "./inspect/adapter.js";
export { formatInspectReport, formatBytes, formatCount } from "./inspect/format.js";
export type { TensorEntry, GroupStats, DtypeStats, FileStats } from "./inspect/tensors.js";
export { runForward, type ForwardCommandOptions, type ForwardCommandResult } from "./commands/forward.js";
