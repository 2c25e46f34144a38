/**
 * `SchemaSync`: the schema step as its own resource — preflight, then pg_dump pre-data applied to the
 * target. Outputs what post-data will be built after the load and what is held back until cutover.
 * A `Migration` with the same name (dependsOn this) continues with the load.
 */
import * as pulumi from "@pulumi/pulumi";

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

export const schemaSyncProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds: any, news: any) { return require("pgferry/dist/provider/resources/schemaSyncHandlers").check(olds, news); },
  async diff(id: string, olds: any, news: any) { return require("pgferry/dist/provider/resources/schemaSyncHandlers").diff(id, olds, news); },
  async create(inputs: any) { return require("pgferry/dist/provider/resources/schemaSyncHandlers").create(inputs); },
  async read(id: string, props: any) { return require("pgferry/dist/provider/resources/schemaSyncHandlers").read(id, props); },
  async update(id: string, olds: any, news: any) { return require("pgferry/dist/provider/resources/schemaSyncHandlers").update(id, olds, news); },
  async delete() { return require("pgferry/dist/provider/resources/schemaSyncHandlers").remove(); },
};

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
