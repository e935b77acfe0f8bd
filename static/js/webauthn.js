// Registers a security key: asks the server for options, lets the browser talk to the key,
// and sends the key's answer back. Every failure is explained in words a person can act on.
(() => {
  "use strict";
  const form = document.querySelector("form[data-webauthn-register]");
  if (!form) return;
  const status = document.getElementById("key-status");
  const button = form.querySelector("button[type=submit]");
  const csrf = form.querySelector("input[name=csrf_token]").value;

  const say = (text, kind) => {
    status.textContent = text;
    status.dataset.kind = kind;
    status.hidden = false;
  };

  if (!window.PublicKeyCredential || !PublicKeyCredential.parseCreationOptionsFromJSON) {
    say("This browser cannot register security keys. Use a recent Chrome, Edge, Firefox or Safari.", "error");
    button.disabled = true;
    return;
  }

  const explain = (error) => {
    switch (error.name) {
      case "NotAllowedError":
        return "The key was not registered: the request was cancelled, or it timed out before the key was touched. Press the button again and touch the key when it blinks.";
      case "InvalidStateError":
        return "This key is registered already. Use your other key.";
      case "AbortError":
        return "The registration was interrupted. Press the button to try again.";
      case "SecurityError":
        return "The browser refused the request because of the page's address. Open the programme's page from its usual address and try again.";
      case "NotSupportedError":
        return "This key or browser cannot make the kind of credential we need. Try another browser.";
      case "ServerError":
        return error.message;
      default:
        return "Something went wrong (" + error.name + "): " + error.message;
    }
  };

  const post = async (url, body) => {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(data.message || "The server refused the request (" + response.status + ").");
      error.name = "ServerError";
      throw error;
    }
    return data;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = form.elements.name.value.trim();
    if (!name) {
      say("Give the key a name first, such as “Titan on my keyring”.", "error");
      form.elements.name.focus();
      return;
    }
    button.disabled = true;
    try {
      say("Preparing…", "info");
      const begun = await post(form.dataset.optionsUrl, {});
      say("Insert your key (or hold it to the phone) and touch it when it blinks.", "info");
      const credential = await navigator.credentials.create({
        publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(begun.publicKey),
      });
      const done = await post(form.dataset.registerUrl, {
        token: begun.token,
        name,
        credential: credential.toJSON(),
      });
      say(done.message, done.outcome === "titan" ? "success" : "warning");
      window.location.assign(done.next);
    } catch (error) {
      say(explain(error), "error");
      button.disabled = false;
    }
  });
})();
