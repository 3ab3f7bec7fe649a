"use strict";
// validatorUrl: null — no request to an outside validator; the console works offline.
window.SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger", deepLinking: false, validatorUrl: null });
