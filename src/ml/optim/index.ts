export { AdamW, type AdamWOptions } from './adamw.js';
export { Adafactor, type AdafactorOptions, factoredDims } from './adafactor.js';
export { clipByGlobalNorm, globalNorm, normsByName } from './clip.js';
export { accumulateGradients, type Accumulated } from './accumulate.js';
export { loadOptimizerState, saveOptimizerState } from './io.js';
export {
  type Grads,
  type LearningRate,
  type Optimizer,
  type OptimizerState,
  OptimizerError,
  disposeGrads,
  lrAt,
  matrixDecayMask,
  valueAndGrads,
} from './types.js';
