// Load Specialized UNet (DiffFERV): after the node runs, shows what trained the loaded UNet (branch,
// losses, steps: the `specialize` command's metadata, sent as `text` in the node's UI output) in a
// read-only text box under the node. The box is added on the first run only, so a workflow that is
// just opened keeps its layout; it is neither saved with the workflow nor sent with the prompt.
import { app } from "../../scripts/app.js";

const NODE = "DiffFERV_LoadSpecializedUNet";
const WIDGET = "training_text";

app.registerExtension({
  name: "DiffFERV.TrainingInfo",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;

    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      const text = message?.text?.join("\n");
      if (!text) return;
      let widget = this.widgets?.find((w) => w.name === WIDGET);
      if (!widget) {
        const area = document.createElement("textarea");
        area.readOnly = true;
        area.spellcheck = false;
        area.style.cssText =
          "width: 100%; box-sizing: border-box; resize: none; font: 11px monospace; white-space: pre-wrap;" +
          "background: var(--comfy-input-bg); color: var(--input-text); border: none;";
        widget = this.addDOMWidget(WIDGET, "diffferv_training_text", area, {
          getValue: () => area.value,
          setValue: (value) => {
            area.value = value ?? "";
          },
          getMinHeight: () => 60,
          serialize: false,
        });
        widget.serialize = false;
        this.setSize(this.computeSize());
      }
      widget.value = text;
    };
  },
});
