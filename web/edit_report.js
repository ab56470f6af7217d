// Edit Report (DiffFERV): shows the report's numbers on the node, in a read-only text box that is filled
// when the node runs (the node sends them as `text` in its UI output). The box is display only: it is
// neither saved with the workflow nor sent with the prompt.
import { app } from "../../scripts/app.js";

const NODE = "DiffFERV_EditReport";
const WIDGET = "report_text";
const PLACEHOLDER = "Queue the workflow: the edit's numbers appear here.";

app.registerExtension({
  name: "DiffFERV.EditReport",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;

    const created = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = created?.apply(this, arguments);
      const area = document.createElement("textarea");
      area.readOnly = true;
      area.spellcheck = false;
      area.placeholder = PLACEHOLDER;
      area.style.cssText =
        "width: 100%; box-sizing: border-box; resize: none; font: 11px monospace; white-space: pre;" +
        "overflow: auto; background: var(--comfy-input-bg); color: var(--input-text); border: none;";
      const widget = this.addDOMWidget(WIDGET, "diffferv_report_text", area, {
        getValue: () => area.value,
        setValue: (value) => {
          area.value = value ?? "";
        },
        getMinHeight: () => 120,
        serialize: false, // not in the prompt
      });
      widget.serialize = false; // not in the saved workflow's widget values
      return result;
    };

    const executed = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      executed?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === WIDGET);
      if (widget && message?.text) widget.value = message.text.join("\n");
    };
  },
});
