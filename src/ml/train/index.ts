export { cadenceFields, optimizerFields, optimizerFrom, scheduleFields, scheduleFrom, trainerConfig } from './config.js';
export type { OptimizerDefaults, ScheduleDefaults } from './config.js';
export { findResume, runTraining } from './loop.js';
export type { Cadence, Trainer } from './loop.js';
export { deriveSeed, MAIN_MODEL, ShuffledOrder, TRAIN_STATE_FILE, TrainState, TrainStateError } from './state.js';
export type { ModelEntry, Positioned, TrainStateParts } from './state.js';
export { optimizerUpdate } from './step.js';
export type { UpdateOptions, UpdateResult } from './step.js';
