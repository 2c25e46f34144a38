/**
 * `SchemaSync`: the schema step as its own resource — preflight, then pg_dump pre-data applied to the
 * target. Outputs what post-data will be built after the load and what is held back until cutover.
 * A `Migration` with the same name (dependsOn this) continues with the load.
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "./handlerProvider";

export interface SchemaSyncArgs {
  source: pulumi.Input<string>;
  target: pulumi.Input<string>;
  /** The Migration's name. */
  name?: pulumi.Input<string>;
  schemas?: pulumi.Input<pulumi.Input<string>[]>;
  include?: pulumi.Input<pulumi.Input<string>[]>;
  exclude?: pulumi.Input<pulumi.Input<string>[]>;
  replicaIdentityFull?: pulumi.Input<boolean>;
}

export const schemaSyncProvider = handlerProvider("pgferry/dist/provider/resources/schemaSyncHandlers");

export interface SchemaEntryOutput { kind: string; object: string; applied: boolean }

export class SchemaSync extends pulumi.dynamic.Resource {
  declare public readonly phase: pulumi.Output<string>;
  /** Indexes, keys, triggers built after the load. */
  declare public readonly postData: pulumi.Output<SchemaEntryOutput[]>;
  /** Foreign keys and materialized view data, applied at cutover. */
  declare public readonly heldBack: pulumi.Output<SchemaEntryOutput[]>;
  declare public readonly migrationName: pulumi.Output<string>;

  constructor(name: string, args: SchemaSyncArgs, opts?: pulumi.CustomResourceOptions) {
    super(schemaSyncProvider, name, { ...args, phase: undefined, postData: undefined, heldBack: undefined, migrationName: undefined },
      { ...opts, additionalSecretOutputs: ["source", "target"] }, "pgferry", "SchemaSync");
  }
}
