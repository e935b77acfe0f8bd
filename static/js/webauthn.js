// Security keys in the browser: registering one (form[data-webauthn-register]) and signing in
// with one (button[data-webauthn-sign-in]). Each asks the server for options, lets the browser
// talk to the key, and sends the key's answer back; every failure is explained in words a
// person can act on, in the status line named by the element's aria-describedby.
(() => {
  "use strict";

  const failure = (name, message) => {
    const error = new Error(message);
    error.name = name;
    return error;
  };

  const post = async (url, body, csrf) => {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      // A page that redirects (to sign in, say) would answer with HTML instead of JSON.
      redirect: "manual",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body),
    });
    if (response.type === "opaqueredirect") {
      throw failure("SignedOut", "You are no longer signed in, so nothing was done. Sign in again, then retry.");
    }
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      throw failure("ServerError", (data && data.message) || "The server refused the request (" + response.status + ").");
    }
    if (data === null) {
      throw failure("ServerError", "The server's answer could not be read. Reload the page and try again.");
    }
    return data;
  };

  const explain = (error, notAllowed) => {
    switch (error.name) {
      case "NotAllowedError":
        return notAllowed;
      case "InvalidStateError":
        return "This key is registered already. Use your other key.";
      case "AbortError":
        return "It was interrupted. Press the button to try again.";
      case "SecurityError":
        return "The browser refused the request because of the page's address. Open the programme's page from its usual address and try again.";
      case "NotSupportedError":
        return "This key or browser cannot make the kind of credential we need. Try another browser.";
      case "ServerError":
      case "SignedOut":
        return error.message;
      default:
        return "Something went wrong (" + error.name + "): " + error.message;
    }
  };

  const statusLine = (status) => (text, kind) => {
    status.textContent = text;
    status.dataset.kind = kind;
    status.hidden = false;
  };

  const supported = (method) => Boolean(window.PublicKeyCredential && PublicKeyCredential[method]);

  // --- registering a key ----------------------------------------------------------------------
  const register = document.querySelector("form[data-webauthn-register]");
  if (register) {
    const say = statusLine(document.getElementById("key-status"));
    const button = register.querySelector("button[type=submit]");
    const csrf = register.querySelector("input[name=csrf_token]").value;
    // The button is rendered disabled, so that a click before this script ran posts nothing.
    if (supported("parseCreationOptionsFromJSON")) {
      button.disabled = false;
    } else {
      say("This browser cannot register security keys. Use a recent Chrome, Edge, Firefox or Safari.", "error");
    }
    register.addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = register.elements.name.value.trim();
      if (!name) {
        say("Give the key a name first, such as “Titan on my keyring”.", "error");
        register.elements.name.focus();
        return;
      }
      button.disabled = true;
      try {
        say("Preparing…", "info");
        const begun = await post(register.dataset.optionsUrl, {}, csrf);
        say("Insert your key (or hold it to the phone) and touch it when it blinks.", "info");
        const credential = await navigator.credentials.create({
          publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(begun.publicKey),
        });
        const done = await post(register.dataset.registerUrl, { token: begun.token, name, credential: credential.toJSON() }, csrf);
        say(done.message, done.outcome === "titan" ? "success" : "warning");
        window.location.assign(done.next);
      } catch (error) {
        say(explain(error, "The key was not registered: the request was cancelled, or it timed out before the key was touched. Press the button again and touch the key when it blinks."), "error");
        button.disabled = false;
      }
    });
  }

  // --- signing in with a key ------------------------------------------------------------------
  const signIn = document.querySelector("button[data-webauthn-sign-in]");
  if (signIn) {
    const form = signIn.form;
    const say = statusLine(document.getElementById("key-sign-in-status"));
    const csrf = form.querySelector("input[name=csrf_token]").value;
    signIn.hidden = false;
    if (!supported("parseRequestOptionsFromJSON")) {
      signIn.disabled = true;
      say("This browser cannot use security keys; use the emailed link.", "info");
    }
    signIn.addEventListener("click", async () => {
      // A maintainer names their address; staff past their password need not.
      const field = form.elements.email;
      const email = field ? field.value.trim() : null;
      if (field && !email.includes("@")) {
        say("Enter the email address of your PyPI account first.", "error");
        field.focus();
        return;
      }
      signIn.disabled = true;
      try {
        say("Preparing…", "info");
        const begun = await post(signIn.dataset.optionsUrl, field ? { email } : {}, csrf);
        say("Insert your key (or hold it to the phone) and touch it when it blinks.", "info");
        const credential = await navigator.credentials.get({
          publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(begun.publicKey),
        });
        const done = await post(signIn.dataset.signInUrl, { token: begun.token, credential: credential.toJSON() }, csrf);
        window.location.assign(done.next);
      } catch (error) {
        say(explain(error, signIn.dataset.notAllowed || "No key signed in: the request was cancelled or timed out, or this key is not registered for that address. Try again, or use the emailed link."), "error");
        signIn.disabled = false;
      }
    });
  }
})();
