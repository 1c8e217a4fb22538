// A Time-Stamp Authority made with Bouncy Castle's TSP API (bcpkix), for the
// interoperability tests of the RFC 3161 rail (tests/integration/test_tsa_interop.py).
//
// Run as a single source file against the Bouncy Castle jars (Debian's
// libbcpkix-java):  java -cp bcprov.jar:bcpkix.jar:bcutil.jar BcTsa.java DIR KEY NOT_BEFORE NOT_AFTER
//
// It creates its own root CA and TSA certificate (KEY: ec or rsa; the TSA
// certificate is valid from NOT_BEFORE to NOT_AFTER, epoch seconds, and has a
// critical extendedKeyUsage of id-kp-timeStamping), writes DIR/ca.pem and
// DIR/tsa.pem, then answers every job of DIR/jobs.tsv, one per line:
//
//   NAME  ESS(v1|v2)  ENCODING(ber|dl)  ORDER(tsa-ca|ca-tsa)  GENTIME(epoch seconds)
//
// reading the DER TimeStampReq DIR/NAME.tsq and writing the TimeStampResp to
// DIR/NAME.tsr.  ESS v1 is signingCertificate (SHA-1 ESSCertID), v2 is
// signingCertificateV2 (SHA-256).  ENCODING ber is Bouncy Castle's default
// getEncoded() (indefinite lengths where its CMS classes use BER), dl is
// definite-length.  ORDER is the order in which the certificates are handed to
// the generator (Bouncy Castle keeps it: the SET OF is not sorted as DER
// requires).  Certificates are embedded only when the request asks for them.
import java.io.StringWriter;
import java.math.BigInteger;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.SecureRandom;
import java.security.Security;
import java.security.spec.ECGenParameterSpec;
import java.util.Date;
import java.util.List;

import org.bouncycastle.asn1.ASN1Encoding;
import org.bouncycastle.asn1.ASN1ObjectIdentifier;
import org.bouncycastle.asn1.nist.NISTObjectIdentifiers;
import org.bouncycastle.asn1.oiw.OIWObjectIdentifiers;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x509.AlgorithmIdentifier;
import org.bouncycastle.asn1.x509.BasicConstraints;
import org.bouncycastle.asn1.x509.ExtendedKeyUsage;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.KeyPurposeId;
import org.bouncycastle.asn1.x509.KeyUsage;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.X509v3CertificateBuilder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509ExtensionUtils;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.cms.jcajce.JcaSimpleSignerInfoGeneratorBuilder;
import org.bouncycastle.jce.provider.BouncyCastleProvider;
import org.bouncycastle.openssl.jcajce.JcaPEMWriter;
import org.bouncycastle.operator.DigestCalculator;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;
import org.bouncycastle.operator.jcajce.JcaDigestCalculatorProviderBuilder;
import org.bouncycastle.tsp.TSPAlgorithms;
import org.bouncycastle.tsp.TimeStampRequest;
import org.bouncycastle.tsp.TimeStampResponse;
import org.bouncycastle.tsp.TimeStampResponseGenerator;
import org.bouncycastle.tsp.TimeStampTokenGenerator;
import org.bouncycastle.util.CollectionStore;

public class BcTsa {
    static final SecureRandom RANDOM = new SecureRandom();

    static KeyPair newKey(String type) throws Exception {
        if (type.equals("ec")) {
            KeyPairGenerator g = KeyPairGenerator.getInstance("EC", "BC");
            g.initialize(new ECGenParameterSpec("secp256r1"), RANDOM);
            return g.generateKeyPair();
        }
        KeyPairGenerator g = KeyPairGenerator.getInstance("RSA", "BC");
        g.initialize(2048, RANDOM);
        return g.generateKeyPair();
    }

    static String signatureAlgorithm(String type) {
        return type.equals("ec") ? "SHA256withECDSA" : "SHA256withRSA";
    }

    static String pem(X509CertificateHolder cert) throws Exception {
        StringWriter out = new StringWriter();
        try (JcaPEMWriter w = new JcaPEMWriter(out)) {
            w.writeObject(cert);
        }
        return out.toString();
    }

    public static void main(String[] args) throws Exception {
        Security.addProvider(new BouncyCastleProvider());
        Path dir = Path.of(args[0]);
        String keyType = args[1];
        Date notBefore = new Date(Long.parseLong(args[2]) * 1000L);
        Date notAfter = new Date(Long.parseLong(args[3]) * 1000L);
        JcaX509ExtensionUtils ext = new JcaX509ExtensionUtils();

        KeyPair caKey = newKey(keyType);
        X500Name caName = new X500Name("CN=Bouncy Castle test root,O=BC interop");
        X509v3CertificateBuilder ca = new JcaX509v3CertificateBuilder(
                caName, BigInteger.valueOf(RANDOM.nextInt(1 << 30) + 1L),
                new Date(notBefore.getTime() - 86_400_000L), new Date(notAfter.getTime() + 86_400_000L * 3650),
                caName, caKey.getPublic());
        ca.addExtension(Extension.basicConstraints, true, new BasicConstraints(true));
        ca.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.keyCertSign | KeyUsage.cRLSign));
        ca.addExtension(Extension.subjectKeyIdentifier, false, ext.createSubjectKeyIdentifier(caKey.getPublic()));
        X509CertificateHolder caCert = ca.build(
                new JcaContentSignerBuilder(signatureAlgorithm(keyType)).setProvider("BC").build(caKey.getPrivate()));

        KeyPair tsaKey = newKey(keyType);
        X509v3CertificateBuilder tsa = new JcaX509v3CertificateBuilder(
                caName, new BigInteger(64, RANDOM).setBit(63), notBefore, notAfter,
                new X500Name("CN=Bouncy Castle test TSA,O=BC interop"), tsaKey.getPublic());
        tsa.addExtension(Extension.basicConstraints, true, new BasicConstraints(false));
        tsa.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.digitalSignature));
        tsa.addExtension(Extension.extendedKeyUsage, true, new ExtendedKeyUsage(KeyPurposeId.id_kp_timeStamping));
        tsa.addExtension(Extension.authorityKeyIdentifier, false, ext.createAuthorityKeyIdentifier(caKey.getPublic()));
        X509CertificateHolder tsaCert = tsa.build(
                new JcaContentSignerBuilder(signatureAlgorithm(keyType)).setProvider("BC").build(caKey.getPrivate()));
        Files.writeString(dir.resolve("ca.pem"), pem(caCert));
        Files.writeString(dir.resolve("tsa.pem"), pem(tsaCert));

        JcaDigestCalculatorProviderBuilder digests = new JcaDigestCalculatorProviderBuilder().setProvider("BC");
        for (String line : Files.readAllLines(dir.resolve("jobs.tsv"))) {
            if (line.isBlank()) {
                continue;
            }
            String[] job = line.split("\t");
            String name = job[0];
            AlgorithmIdentifier essHash = new AlgorithmIdentifier(
                    job[1].equals("v1") ? OIWObjectIdentifiers.idSHA1 : NISTObjectIdentifiers.id_sha256);
            DigestCalculator essDigest = digests.build().get(essHash);
            TimeStampTokenGenerator tokens = new TimeStampTokenGenerator(
                    new JcaSimpleSignerInfoGeneratorBuilder().setProvider("BC").build(
                            signatureAlgorithm(keyType), tsaKey.getPrivate(),
                            new JcaX509CertificateConverter().setProvider("BC").getCertificate(tsaCert)),
                    essDigest, new ASN1ObjectIdentifier("1.2.3.4.1"));
            tokens.setAccuracySeconds(1);
            List<X509CertificateHolder> certs =
                    job[3].equals("tsa-ca") ? List.of(tsaCert, caCert) : List.of(caCert, tsaCert);
            tokens.addCertificates(new CollectionStore<>(certs));
            TimeStampResponseGenerator responses = new TimeStampResponseGenerator(tokens, TSPAlgorithms.ALLOWED);
            TimeStampRequest request = new TimeStampRequest(Files.readAllBytes(dir.resolve(name + ".tsq")));
            TimeStampResponse response = responses.generate(
                    request, new BigInteger(96, RANDOM).setBit(95), new Date(Long.parseLong(job[4]) * 1000L));
            if (response.getStatus() != 0) {
                throw new IllegalStateException(name + ": " + response.getStatusString());
            }
            byte[] out = job[2].equals("dl") ? response.getEncoded(ASN1Encoding.DL) : response.getEncoded();
            Files.write(dir.resolve(name + ".tsr"), out);
        }
    }
}
