"""The wrapper's one settings object (`settings`) and its logging (`logs`). May import the shared contract
package only."""
