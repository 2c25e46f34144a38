/**
 * `Migration`: an online PostgreSQL migration as a Pulumi resource. `pulumi up` starts it and returns
 * once changes stream (status ReadyToCutover); setting `cutover: true` and running `pulumi up` again cuts
 * over (Completed); `pulumi refresh` reports live status; `pulumi destroy` removes slots, publications
 * and subscriptions, never target data.
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "./handlerProvider";
import { MIGRATION_INPUTS, MIGRATION_OUTPUTS, MigrationOutputValues, RequiredInputKey, ValueOf } from "../engine/core/optionSpec";

type Spec = typeof MIGRATION_INPUTS;
/** A Pulumi input of a setting's value; lists take inputs element by element too. */
type PulumiInputOf<S> = S extends { kind: "list" } ? pulumi.Input<pulumi.Input<string>[]> : pulumi.Input<ValueOf<S>>;
type AllArgs = { -readonly [K in keyof Spec]: PulumiInputOf<Spec[K]> };
/**
 * The Migration's inputs, generated from the spec (provider/engine/core/optionSpec.ts MIGRATION_INPUTS: each
 * input's doc, choices and default live there). source and target are required; the rest optional.
 */
export type MigrationArgs = Partial<Omit<AllArgs, RequiredInputKey>> & Pick<AllArgs, RequiredInputKey>;

/** The Migration's outputs as Pulumi outputs, generated from the spec's MIGRATION_OUTPUTS. */
type MigrationOutputProps = { readonly [K in keyof MigrationOutputValues]: pulumi.Output<MigrationOutputValues[K]> };

export const migrationProvider = handlerProvider("pgferry/dist/provider/resources/migrationHandlers");

// Declaration merging: the class's output properties are the spec's (declared, filled in by the engine).
export interface Migration extends MigrationOutputProps {}

export class Migration extends pulumi.dynamic.Resource {
  constructor(name: string, args: MigrationArgs, opts?: pulumi.CustomResourceOptions) {
    super(migrationProvider, name, {
      ...args,
      // Every output, undefined until the provider fills it in (so Pulumi registers it as an output).
      ...Object.fromEntries(Object.keys(MIGRATION_OUTPUTS).map((k) => [k, undefined])),
    }, {
      ...opts,
      // Connection strings stay secret in state even when the program passed plain strings.
      additionalSecretOutputs: ["source", "target"],
      // Slot, publication and subscription names are unique: the old one must go before the new one is made.
      deleteBeforeReplace: true,
    }, "pgferry", "Migration");
  }
}
