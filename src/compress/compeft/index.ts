export {
  compeft,
  reconstruct,
  reconstructTensor,
  compeftStats,
  compeftScale,
  keepCount,
  topKIndices,
  unbiasedStd,
  COMPEFT_DTYPES,
} from "./compeft.js";
export type { CompeftOptions, CompeftTensor, CompeftDenseTensor, CompeftCompressed, CompeftDType, ReconstructDType } from "./compeft.js";
export { encodeCompeft, decodeCompeft, COMPEFT_MAGIC, COMPEFT_FORMAT_VERSION, COMPEFT_SUPPORTED_VERSIONS } from "./format.js";
export { writeCompeftFile, readCompeftFile } from "./file.js";
export {
  compressAdapter,
  decompressAdapter,
  compeftAdapter,
  adapterFromCompeft,
  compeftRole,
  ADAPTER_CONFIG_KEY,
  ADAPTER_WEIGHTS_METADATA_KEY,
} from "./adapter.js";
export type { CompressAdapterOptions, CompressAdapterResult, DecompressAdapterResult, AdapterData, CompeftRole } from "./adapter.js";
