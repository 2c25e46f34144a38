/**
 * `ServerParameters`: make a self-managed server ready for logical replication (wal_level = logical,
 * enough replication slots and WAL senders, any extra settings) with ALTER SYSTEM + reload. Outputs
 * what is in force and `pendingRestart`; a Migration that depends on it refuses, with a clear message,
 * while the restart is pending. (Azure Flexible Server: use `azure.FlexibleServerPrerequisites`.)
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "./handlerProvider";

export interface ServerParametersArgs {
  /** Admin (superuser) URI of the server (secret). */
  server: pulumi.Input<string>;
  /** Default "logical". */
  walLevel?: pulumi.Input<string>;
  /** Default: what the server uses now plus room for `migrations` migrations. */
  maxReplicationSlots?: pulumi.Input<number>;
  maxWalSenders?: pulumi.Input<number>;
  /** Concurrent migrations to size for (default 1). */
  migrations?: pulumi.Input<number>;
  /** Any other settings, as pg_settings shows them (base units), e.g. { max_slot_wal_keep_size: "10240" }. */
  settings?: pulumi.Input<Record<string, pulumi.Input<string>>>;
}

export const serverParametersProvider = handlerProvider("pgferry/dist/provider/resources/serverParametersHandlers");

export class ServerParameters extends pulumi.dynamic.Resource {
  /** Values in force now, by parameter name. */
  declare public readonly effective: pulumi.Output<Record<string, string>>;
  /** Values requested (including sized defaults). */
  declare public readonly wanted: pulumi.Output<Record<string, string>>;
  declare public readonly pendingRestart: pulumi.Output<boolean>;
  declare public readonly pendingRestartParameters: pulumi.Output<string[]>;
  declare public readonly changed: pulumi.Output<string[]>;

  constructor(name: string, args: ServerParametersArgs, opts?: pulumi.CustomResourceOptions) {
    super(serverParametersProvider, name, { ...args, effective: undefined, wanted: undefined, pendingRestart: undefined,
      pendingRestartParameters: undefined, changed: undefined }, { ...opts, additionalSecretOutputs: ["server"] }, "pgferry", "ServerParameters");
  }
}
