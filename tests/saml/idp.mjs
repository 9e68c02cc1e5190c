// A SAML identity provider for confab's SAML tests (tests/api/saml.rs): npm `samlify`, a
// SAML implementation confab's authors did not write, parses confab's real AuthnRequest and
// issues signed Responses to it. The test sends one JSON command on stdin and reads one JSON
// answer on stdout.
//
// {"op": "metadata"} -> {"xml": IdP metadata with the signing certificate idp-cert.pem}
// {"op": "respond", "location": confab's 302 Location to the IdP, "sp": {"metadata": xml} or
//  {"entityId", "acs"}, "email": NameID, "options": {...}} -> {"SAMLResponse", "RelayState",
//  "xml", "redirectQuery"?}
//
// Options (the attack vectors are made from real signed output, then changed the way an
// attacker would):
//   signAssertion (default true), signResponse (default false): which parts samlify signs;
//   key: "other"          sign with a key that is not the one in the metadata;
//   audience: "…"         the Audience the IdP names (default the SP's entity id);
//   shiftSeconds: n       every instant moved by n seconds (negative: an expired assertion);
//   assertionId: "…"      a fixed assertion ID (the replay vector);
//   unsigned: true        every ds:Signature removed after signing;
//   wrap: "xsw3"|"xsw4"   signature wrapping: an unsigned copy naming `victim` placed before the
//                         signed assertion (xsw3) or around it, the signed one moved under it (xsw4);
//   commentAfter: "…"     a comment inserted in the NameID text after this prefix;
//   binding: "redirect"   also answer the Response in HTTP-Redirect encoding (deflated).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import * as samlify from 'samlify';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';

const here = path.dirname(fileURLToPath(import.meta.url));
const read = (name) => fs.readFileSync(path.join(here, name), 'utf8');
const IDP_ENTITY_ID = 'https://idp.example.test/metadata';
const IDP_SSO_URL = 'https://idp.example.test/sso';
const REDIRECT = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect';
const POST = 'urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST';
const EMAIL_FORMAT = 'urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress';
const ASSERTION_NS = 'urn:oasis:names:tc:SAML:2.0:assertion';
const DSIG_NS = 'http://www.w3.org/2000/09/xmldsig#';

// samlify refuses to run without a schema validator; the test IdP only parses confab's own
// AuthnRequest, whose XML the assertions below check by outcome.
samlify.setSchemaValidator({ validate: () => Promise.resolve('skipped') });

function identityProvider(keyName) {
  return samlify.IdentityProvider({
    entityID: IDP_ENTITY_ID,
    privateKey: read(`${keyName}-key.pem`),
    signingCert: read(`${keyName}-cert.pem`),
    singleSignOnService: [{ Binding: REDIRECT, Location: IDP_SSO_URL }],
    nameIDFormat: [EMAIL_FORMAT],
    wantAuthnRequestsSigned: false,
  });
}

function serviceProvider(sp, options) {
  const signing = {
    wantAssertionsSigned: options.signAssertion !== false,
    wantMessageSigned: options.signResponse === true,
  };
  if (sp.metadata) return samlify.ServiceProvider({ metadata: sp.metadata, ...signing });
  return samlify.ServiceProvider({
    entityID: sp.entityId,
    assertionConsumerService: [{ Binding: POST, Location: sp.acs }],
    ...signing,
  });
}

const iso = (date, shift) => new Date(date.getTime() + shift * 1000).toISOString();

async function respond(cmd) {
  const options = cmd.options ?? {};
  const url = new URL(cmd.location);
  const query = Object.fromEntries(url.searchParams);
  const sp = serviceProvider(cmd.sp, options);
  // Parsed with the real IdP (metadata key): InResponseTo, the ACS and the RelayState come
  // from confab's AuthnRequest.
  const request = await identityProvider('idp').parseLoginRequest(sp, 'redirect', { query, octetString: '' });
  const signer = identityProvider(options.key === 'other' ? 'other' : 'idp');
  const acs = sp.entityMeta.getAssertionConsumerService('post');
  const replace = (template) => {
    const now = new Date();
    const shift = options.shiftSeconds ?? 0;
    const values = {
      ID: signer.entitySetting.generateID(),
      AssertionID: options.assertionId ?? signer.entitySetting.generateID(),
      Destination: acs,
      Audience: options.audience ?? sp.entityMeta.getEntityID(),
      EntityID: sp.entityMeta.getEntityID(),
      SubjectRecipient: acs,
      Issuer: IDP_ENTITY_ID,
      IssueInstant: iso(now, shift),
      AssertionConsumerServiceURL: acs,
      StatusCode: samlify.Constants.StatusCode.Success,
      ConditionsNotBefore: iso(now, shift),
      ConditionsNotOnOrAfter: iso(now, shift + 300),
      SubjectConfirmationDataNotOnOrAfter: iso(now, shift + 300),
      NameIDFormat: EMAIL_FORMAT,
      NameID: cmd.email,
      InResponseTo: request.extract.request.id,
      AuthnStatement: '',
      AttributeStatement: '',
    };
    // SamlLib is only on the CommonJS export object (not a named ESM export).
    return { id: values.ID, context: samlify.default.SamlLib.replaceTagsByValue(template, values) };
  };
  const relayState = query.RelayState;
  const made = await signer.createLoginResponse(sp, request, 'post', { email: cmd.email }, {
    customTagReplacement: replace,
    relayState,
  });
  let xml = Buffer.from(made.context, 'base64').toString('utf8');
  xml = tamper(xml, options);
  const answer = { SAMLResponse: Buffer.from(xml, 'utf8').toString('base64'), RelayState: relayState, xml };
  if (options.binding === 'redirect') {
    const deflated = zlib.deflateRawSync(Buffer.from(xml, 'utf8')).toString('base64');
    answer.redirectQuery = new URLSearchParams({ SAMLResponse: deflated, RelayState: relayState }).toString();
  }
  return answer;
}

function tamper(xml, options) {
  if (!options.unsigned && !options.wrap && !options.commentAfter) return xml;
  const doc = new DOMParser().parseFromString(xml, 'text/xml');
  const response = doc.documentElement;
  const assertion = doc.getElementsByTagNameNS(ASSERTION_NS, 'Assertion')[0];
  if (options.unsigned) {
    for (const sig of Array.from(doc.getElementsByTagNameNS(DSIG_NS, 'Signature'))) {
      sig.parentNode.removeChild(sig);
    }
  }
  if (options.wrap) {
    // The attacker's assertion: a copy of the signed one, another ID, the victim's NameID and
    // no signature.
    const evil = assertion.cloneNode(true);
    evil.setAttribute('ID', '_evil' + assertion.getAttribute('ID'));
    for (const sig of Array.from(evil.getElementsByTagNameNS(DSIG_NS, 'Signature'))) {
      if (sig.parentNode === evil) evil.removeChild(sig);
    }
    evil.getElementsByTagNameNS(ASSERTION_NS, 'NameID')[0].textContent = options.victim;
    if (options.wrap === 'xsw3') {
      response.insertBefore(evil, assertion);
    } else {
      response.replaceChild(evil, assertion);
      evil.appendChild(assertion);
    }
  }
  if (options.commentAfter) {
    const nameId = assertion.getElementsByTagNameNS(ASSERTION_NS, 'NameID')[0];
    const text = nameId.textContent;
    if (!text.startsWith(options.commentAfter)) throw new Error(`NameID ${text} does not start with the prefix`);
    while (nameId.firstChild) nameId.removeChild(nameId.firstChild);
    nameId.appendChild(doc.createTextNode(options.commentAfter));
    nameId.appendChild(doc.createComment(''));
    nameId.appendChild(doc.createTextNode(text.slice(options.commentAfter.length)));
  }
  return new XMLSerializer().serializeToString(doc);
}

async function main() {
  const input = fs.readFileSync(0, 'utf8');
  const cmd = JSON.parse(input);
  let answer;
  if (cmd.op === 'metadata') answer = { xml: identityProvider('idp').getMetadata() };
  else if (cmd.op === 'respond') answer = await respond(cmd);
  else throw new Error(`unknown op ${cmd.op}`);
  process.stdout.write(JSON.stringify(answer));
}

main().catch((e) => {
  process.stderr.write(String(e?.stack ?? e) + '\n');
  process.exit(1);
});
