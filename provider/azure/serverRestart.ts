/**
 * `ServerRestart`: restarts an Azure Database for PostgreSQL Flexible Server through the ARM
 * `restart` action so static server parameters take effect. Create restarts; a new `trigger` (a hash
 * of the static parameter values, see `restartTrigger`) restarts again; destroy does nothing.
 * azure-native has no restart resource (pulumi-azure-native #3618), hence this dynamic resource.
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "../resources/handlerProvider";

export interface ServerRestartArgs {
  subscriptionId: pulumi.Input<string>;
  resourceGroupName: pulumi.Input<string>;
  serverName: pulumi.Input<string>;
  /** ARM bearer token, e.g. `authorization.getClientTokenOutput().token` (stored as a secret, never in outputs). */
  accessToken: pulumi.Input<string>;
  /** Hash of the static parameter values: a new value restarts the server again. */
  trigger: pulumi.Input<string>;
  /** Microsoft.DBforPostgreSQL API version (default 2025-08-01). */
  apiVersion?: pulumi.Input<string>;
  /** ARM base URL (default https://management.azure.com). */
  armEndpoint?: pulumi.Input<string>;
  /** Seconds between polls when Azure sends no Retry-After (default 10). */
  pollIntervalSec?: pulumi.Input<number>;
  /** Longest wait for the server to become Ready before restarting (default 900). */
  readyTimeoutSec?: pulumi.Input<number>;
  /** Longest wait for the restart to finish (default 1800). */
  restartTimeoutSec?: pulumi.Input<number>;
}

/**
 * The provider the engine runs. Each method only requires the handlers by their published path, so
 * what Pulumi serializes into state is a few lines that keep working across pgferry versions.
 */
export const serverRestartProvider = handlerProvider("pgferry/dist/provider/azure/serverRestartHandlers");

export class ServerRestart extends pulumi.dynamic.Resource {
  /** ISO time the last restart finished. */
  declare public readonly restartedAt: pulumi.Output<string>;
  /** The trigger the last restart was made for. */
  declare public readonly trigger: pulumi.Output<string>;
  /** Final status of the last restart operation ("Succeeded"). */
  declare public readonly operationStatus: pulumi.Output<string>;
  /** Server state seen before the last restart (e.g. "Updating" while parameters were applied). */
  declare public readonly serverStateBefore: pulumi.Output<string>;

  constructor(name: string, args: ServerRestartArgs, opts?: pulumi.CustomResourceOptions) {
    super(serverRestartProvider, name, {
      ...args,
      accessToken: pulumi.secret(args.accessToken),
      restartedAt: undefined, operationStatus: undefined, serverStateBefore: undefined,
    }, {
      ...opts,
      // The handlers never return the token; should an old state hold it, it stays secret.
      additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "accessToken"],
    }, "pgferry", "AzureServerRestart");
  }
}
