/** Entry of the root Pulumi project (Pulumi.yaml → dist/program/index.js, built by `npm run build`). */
import { declareMigrationStack } from "./stack";

const { migration, schema } = declareMigrationStack();

export const status = migration.status;
export const phase = migration.phase;
export const lagBytes = migration.lagBytes;
export const lagSeconds = migration.lagSeconds;
export const pendingChanges = migration.pendingChanges;
export const rowsCopied = migration.rowsCopied;
export const tables = migration.tables;
export const downtimeMs = migration.downtimeMs;
export const rollbackWindow = migration.rollbackWindowStatus;
export const heldBackForCutover = schema?.heldBack;
