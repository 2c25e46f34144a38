/**
 * `FirewallRule`: a pg_hba.conf rule on a self-managed server (written, reloaded, checked in
 * pg_hba_file_rules, removed on delete). `replication: true` makes the replication rule logical
 * replication needs; its name ends in `_replrule`, as Azure's fix for
 * `28000: no pg_hba.conf entry for replication connection` names it.
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "./handlerProvider";

export interface FirewallRuleArgs {
  /** Admin URI of the server whose pg_hba.conf is edited (superuser; secret). */
  server: pulumi.Input<string>;
  /** Rule name; replication rules get the `_replrule` suffix when it is missing. Defaults to the resource name. */
  name?: pulumi.Input<string>;
  /** CIDR allowed, e.g. 10.1.2.3/32. */
  address: pulumi.Input<string>;
  user?: pulumi.Input<string>;
  /** Database name or "all" (default). Logical replication connections match by database name. */
  database?: pulumi.Input<string>;
  /** Authentication method (default scram-sha-256). */
  method?: pulumi.Input<string>;
  replication?: pulumi.Input<boolean>;
}

export const firewallRuleProvider = handlerProvider("pgferry/dist/provider/resources/hbaHandlers");

export class FirewallRule extends pulumi.dynamic.Resource {
  /** The name written into pg_hba.conf (with `_replrule` for replication rules). */
  declare public readonly ruleName: pulumi.Output<string>;
  declare public readonly line: pulumi.Output<string>;
  declare public readonly lineNumber: pulumi.Output<number>;
  declare public readonly hbaFile: pulumi.Output<string>;

  constructor(name: string, args: FirewallRuleArgs, opts?: pulumi.CustomResourceOptions) {
    super(firewallRuleProvider, name, { name, ...args, ruleName: undefined, line: undefined, lineNumber: undefined, hbaFile: undefined },
      { ...opts, additionalSecretOutputs: ["server"], deleteBeforeReplace: true }, "pgferry", "FirewallRule");
  }
}
