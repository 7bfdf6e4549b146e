package tcg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// unhex decodes hex that may be split over lines and indented, so long
// vectors can be pasted in the layout of their source.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b := make([]byte, len(s)/2)
	if len(s)%2 != 0 {
		t.Fatalf("odd-length hex %q", s)
	}
	for i := range b {
		if _, err := fmt.Sscanf(s[2*i:2*i+2], "%02x", &b[i]); err != nil {
			t.Fatalf("bad hex %q: %v", s, err)
		}
	}
	return b
}

// seqKey returns the bytes 1, 2, ..., n, the key the cocoon-tpm vectors use.
func seqKey(n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(i + 1)
	}
	return k
}

// TestKDFaGoTPM uses the vectors of TestKDFa in google/go-tpm
// (tpm2/kdf_test.go). go-tpm takes the label as a Go string without
// terminator and always appends 0x00, which for these non-empty labels is
// what the cocoon-tpm rule does too.
func TestKDFaGoTPM(t *testing.T) {
	tests := []struct {
		alg       AlgID
		key, u, v []byte
		label     string
		bits      int
		want      string
	}{
		{
			AlgSHA256, []byte("yolo\x00"), []byte("kek\x00"), []byte("yoyo\x00"), "IDENTITY", 128,
			"d2d72cc7a8a5eb09e8c79012e2da9f22",
		},
		{
			AlgSHA256, []byte("ca\x00"), []byte("abc\x00"), nil, "IDENTITY", 1024,
			`1aae7151ac1a5690eda7dcabd56800c11c56a3810ba059826fe4776348d6ae8e
			 5d5d18c7ccf8373f7b942ada8b912b12da56fb37f64b935872841ec07d38e1fb
			 8e7ec86efcbfb444756bc8863f858d2690a621c9afb983cd77e7a1048ae1a759
			 8ac895323d44c10227af0a00144cab55111075dc6b72ad6eb163c7458b878e8c`,
		},
		{
			AlgSHA1, []byte("ca\x00"), []byte("abc\x00"), nil, "IDENTITY", 256,
			"83f354afcf923de2112e0891434cd0bdc8acbf01b811c0e8cd062ded39e31f7f",
		},
	}
	for i, tc := range tests {
		got, err := KDFa(tc.alg, tc.key, []byte(tc.label), tc.u, tc.v, tc.bits)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		if want := unhex(t, tc.want); !bytes.Equal(got, want) {
			t.Errorf("vector %d (%s, %d bits):\n got %x\nwant %x", i, tc.alg, tc.bits, got, want)
		}
	}
}

// cocoonKDFaVector is one entry of the KDFa tests in coconut-svsm/cocoon-tpm,
// crypto/src/kdf/tcg_tpm2_kdf_a.rs: key 01 02 03 ... of digest length,
// label "test_kdf_a_label\x00", and the four outputs for (no context),
// (contextV only), (contextU only), (both).
type cocoonKDFaVector struct {
	alg  AlgID
	bits int
	want [4]string
}

// Copied from crypto/src/kdf/tcg_tpm2_kdf_a.rs (test_kdf_a_sha1, _sha256,
// _sha384, _sha512, _sha3_256, _sha3_512). The 397/637/957/1277-bit
// entries cover the masking of the first byte.
var cocoonKDFaVectors = []cocoonKDFaVector{
	{AlgSHA1, 400, [4]string{
		`7fbeb21c36a89a225040381bea132937 208e6c5cdb2be5bc33af0ecad68da710 ba364763da0498507f407a56da743662 4ab6`,
		`3ffaf0a74b95743caa95a9a092771fcb c3e06ac993f928df9ef07a62f4592dff 0791a026cfffd537c8a70e8ba6e963d8 6338`,
		`3a93e9747073c0cd376998ed3b1e8276 21d4b3a261a45448d3b0fda1481aeaf9 271575f8bb7774cd3324569f17eebea0 2195`,
		`3c0c4bb6c0257d3430ad88db0ada33e0 1e3b0449e1f8cc4c936ce12bd197c02d 744a6c438fb1a41042cf5026bbcf85c6 29dc`,
	}},
	{AlgSHA1, 397, [4]string{
		`0863779fa74a9868138c4a82934ffaff 04e81f9d15689d9a8f9ea33225dad696 7e6e504008b281ace1f4df80922a58de 6ea6`,
		`1af59ace3fdff4b2865aa4a5a8894066 21f9c9f239952da90dcafefc39f0816f 070db5f1b08fb0b07eb25409867ae572 c642`,
		`0a1ca80dd15f1cd7424e53791b9ad06a da96429b63d0154464aad211eb82b1c8 cc851cb5bf4305b3a4cccbfcc1e7fa96 8d5f`,
		`003141d500a641b0465ea90b4b1a8af0 2e58b13ab18f2b18b92c7e0d6566bd4f c50489d4e2098407baa73936b4a943d9 77a9`,
	}},
	{AlgSHA256, 640, [4]string{
		`d8a01f0d475078caa9828edcf9ee9cc5 13ff7c72a1e4b5abe91ef572d99b827a 3935edaed51e9575a03eae79d6011b8d
		 a28fca0f5f86ca7a04ff7345667d3fba 5b357bbfdc8a558b73d8c4736460b389`,
		`3ed1b2d1fad86697635d680de0ad4302 7614a296c979df2b6c82b473c13c55ab 1a8f522832308973c6b71ed220d08f65
		 05f89035d32e1454ddd9d22c906a69cd 455902d3221b688143551ecefcae97f4`,
		`4242ce2dba9f8bb01ed36d93deb50a3a fa72320f39bf10796815b5a4dd08e592 75d042e709f8b3ddfa06bc91d0ea4f92
		 b3c03f85e16e1a39fd21ef736d84e035 42d9aa3f6cd029af88e37c8e6fe7c7b1`,
		`cdea645d147f9ebc8c09ef713f02f7f2 2d558222df0535ab0e339b4245c47e13 dbb99b92990499b1e0b52af3f479c15a
		 f9002dc10bb9a0643eadba7169fc272b 96e1b956ab3ba80d209da20f90a638ef`,
	}},
	{AlgSHA256, 637, [4]string{
		`05e27ba5a54a048c17398db8acfff6a5 bdee852114fc19f486920967606cb3f2 e451e564078382df83cf060bf63a34a9
		 8c0011104b26fffe823ffcd39eb52503 92f0f2829a610a5e451c57d237c71e07`,
		`08bbeb65ccc3e2055b16c615073099e0 1b2b37a0cca1ef7debc04a59b9d2df32 5315dda5aa3446881bb328eec0e95233
		 9644c8c3615cdfb3e91e9db5573855fc b0e102a74baf60f0f5eb07b36108d11f`,
		`19ab8d468fee122d6119ca00eff9010b 99b6a1a1de6370ea1692e7781448c81b 4d3c921c55c7bcfde9afa787af86ce5b
		 8638e13d2b407f86eddd3a7dfa39124d f0f1e211fd22564a1c011f2c025c7999`,
		`1b020bda0129cbe74183f861d81b0844 65cc290ac1b4f491ea6b042d26a01839 69786c49ebd39d155b199aa6496bc762
		 2ff371ccfe4b32d6adb1958e6d9b43fe 0fcf7fc0be61e7554623b70a3622b903`,
	}},
	{AlgSHA384, 960, [4]string{
		`5e607a7d6bd9f5662b0e421423d4a469 46de3a7ea15e88db64b979622fe1ee27 1a33dd7d1aaab8537b855b5e2985044d
		 38e0f703288621d7bb468f4ae2006d64 c922412ef235cb71985d93804e2ed064 fe5fd0451b286c4d67752e9ab9aeefa3
		 dd42b7767897f8f6da99da48f29739bd 8cafd4522601ff38`,
		`c441f528950d568fae14b28c511d46b0 060ae175fd89ab63563ba6d0f078e45b c7d2f62d0c9787104d67e370b2c58046
		 f2a013780068db1fc3f377cde546e148 9012c20adb9ae71b544be0bc637a192e cb62137780a812832524792541feeca0
		 a1a3f2c69336e1cfab14185ddb13f5a1 a62093dd5e447534`,
		`496a6e2a9c81e6109d936154c6042814 b8bfe08a0a6c45a07148362d333590e1 a1bc84531b4fa8a2dd8868972497ad56
		 b4511830219a1845d692ca3d6c81360f 57eeac396e29f239f84fc816869721f0 0f0c10be6a964589a7cf5c19a3f768d0
		 de52b4e44990dcaf03b8827dff687e72 b671c2d6b6ba2a52`,
		`fa48497ecdb3f16f607afae51be40303 e21288fa04b29659749a2edcf72f3419 ea835282e4568ec97f64fc24aa4d5f39
		 829fce67bcb6d1ccacadeee10d33c11d 0178d6c8a0e72f2a752b92c015927768 9cd8b7e0fff7ddc726f8acf5cf9d25ab
		 e1ca690c466ccdf59f2e3b30ddabf089 0e78e778fcf41644`,
	}},
	{AlgSHA384, 957, [4]string{
		`1250b3d5c0b760aace9383ddba725820 0cd76288a49831f9f0c830682c1011d5 0e4eaa5303a32e687866f5258b4abd16
		 1bb0815b2a7c008b35252159ad9fc60a 1fd6bb5cf62e156eaf0a225d2ee106cf 0ffaf82c905517e6d725f14414bc6762
		 57b30f72b326ce128da824373fa142e4 e2a795269c358c55`,
		`05655a7218fb3a48fa5e7d8719ef9c2e 4ba6c212ccb4e2387c36ac29cfdf27b3 212f295245b01d5816aecb1ec528a927
		 13cf6ddd7beff93cba026c28a6425d93 95de480df5f2db97114fc26f4edc291f 2e95a516f2489d3fe4a73221806dd7b2
		 81f78ef1550137e1dee244eb726ba4e7 086b0dd52d703860`,
		`1e4e9ec552956a5d5584c3d5e8681fcd afc31d71485e65cbcad184d761309de8 267603caa596e1ab8446d9f9f52b73ac
		 d6e54986ffee7ca823b2256bcce79425 4fb1315af4a595968a989e14668a46b1 b2656fb2616c02cfb74247507a6083ba
		 416ed94c2e4b01c8ee23175d826f2fca e8df65bf8e6ead20`,
		`0f06ac24b96c17305e623d315ffb34bd 0ea4830abeedc14c7ea26d259b32ce9a 8c555750268e182f39dc22a275bd8f3b
		 69f7cba19db8fe6ea1f2b2f863af0cc2 d2db76db29cf3c26eaaa58065fcee3dd 432353bcff8a87ad9095af33a2d26720
		 784531fe4de82f78b11a0b91a683597b 07a91c2c6978a7c9`,
	}},
	{AlgSHA512, 1280, [4]string{
		`a165982a39ac389b8fbd291e3a8ca404 0d6382e64f266b23fc8423f6ba69a0f1 8931384c5636a407a43090c72aa7fac0
		 31ef844bf6ec02f4769af393ffe75eee 05b5612dd9c4f1af8f6b5dc09e160518 92f02daf6f923d85666b5cdcd2dd4cb3
		 803792d51216a68ec6e182753268d02b 9e879bb262b5ce7a41c2a3893cd32e42 4fb8ba5f811f74d1e553cfb8842f0532
		 7c5692ae7894a0225401f867b4c87e7f`,
		`319abe52b68ee8e055f824d30327cc75 a11010f2995f917ade4d7a9e6e16d9e1 d389d580f47829912deb8e3ae6bf58c4
		 fca5eceb8729a5ba893d969e3ca869bd 3fbd3a4a26564c1c67b151f0c79d897a 13c0a34f23c2fbc48a2f06e46d577763
		 44d798a417c734fefddab57e97a5e91a 24800acd16f095161130c8cbbf9d16e5 624f5bc2eacb1b5f931661b88503893b
		 31cb990aee25cd2ae5836df6266ef27f`,
		`8c53e55c3c2011b608409e23f7a91fd5 ef1f6296f59335ef306b2d61bf4fc2e7 e9df3844a782e0eed0c837681283a316
		 092c32390bf08f7657532c15b99b59e8 6950888f5c54d44abf287a4d4a683324 2b71feba189a1a886633f0ba9d64fe25
		 85deccbac865a2f557ab0cb2d1207818 6918785cab031649924e54b96a279644 f822467fd914f90c640e01d7b166cfdd
		 1130e6e2f0ae39890cf3726f4161bf50`,
		`a50ff1569c6064024b21bd57d13c3e81 a308c1ec4f3e101e6615af475e0e933b ec173aeab20591af668238696d05c0e7
		 708bd0a92d3fc8b7103f2fc5a8a95177 5efde071f65f0ccb1b31d37d762b93be 94f6b018ea3f87a57a23548def5bd0df
		 b4005776c64dfef3c10a3ca27a2348f1 c02011a17c2644e6d063e655d247941b 11d5e8e7ad5cb5b8aa75e7a4dd40920e
		 7110b5ef597d9578ef30df4af3680096`,
	}},
	{AlgSHA512, 1277, [4]string{
		`0b645dd93226391ae934a9bd5583b5bf 6efcc44b92894f42d27e8738024f3d40 20c9ea92f7d6c9f587d8aa822efef690
		 33b361f81a78e2021ac8467ea91f8c0b dabf2e515aae47c3268ebc26dcb002f5 85b1a8196c216eaa41a5a64313aa50e0
		 d3f7aa7b0db787631d9c2e63935706a9 5495955be4e301fb3491026bdbf02975 e2944602f467790c9a2559ef965787b0
		 d97811678c8292a16d4e162e0e75513c`,
		`05daed5b73a1636d8ee56cdf585aaf3e 5041f085a3d31cd4239db0bf5a59f536 b9a06c7cce933a1a009f4c83e0754036
		 08c48fbdbe10988af04bbefe2f6edda4 e20fa2ea33f9e38a61b16d54682356c0 15c85bf4eee7ba1724399a0dbb02881a
		 dce8b8b9b4a799836693bd5f206eb47a c0c58584f1cfb1eb8fbe6e95d00c309b c942c92e9b88e35d9ff3ca0e3c6a280a
		 773ee193357aff97bd1d777944eb3b54`,
		`1d158d8e1909bdd3e3776869914d3141 3b89ecb0d4ef5ea119a8057e957a0f97 ad3c5102c4e34d9660e36ce59dedc670
		 c7e8235410e6eb382da7a7dc272fbba6 455f96da0b0cbd1c47586c858b5715d1 16261d7b465377adf519fa4b5059a009
		 39163e890c32ff3e3dcda263934dcd7b 8256a797188e4a1e655c0a3b7b283bc1 3f4aae88d4003808afabaaaea8a497cb
		 a0d4e38a3d3393cc06af24b00ff2d89b`,
		`09816eaf31c50aec25328f10aea8254a 242c39caba603723a4b3bb543668a610 f090ec0cda923b7cb05bd3639fd2f9f0
		 57eb55897834258b3c8d162431036614 5409467be8f51e303bb22f1bbec530b3 c0f9d72b34342eb7ef129ff03a4e15fb
		 43198b076cb238423d18587e67be7fba 3c0579aa8468c7945562f250e5b63366 8e6816472f5038005d48f11fd1e00cd5
		 d6c4f028090e871620216d0092000de0`,
	}},
	{AlgSHA3_256, 640, [4]string{
		`db893813baa29a616fca847e740238b5 5a8bfd71939a730608b8084963cd195c 5a75175da3efb50b66c95064314bdc99
		 c179de6c996928b70c80b67fa1aeb890 f8db9ad799aef5eff5ad987dc05fef07`,
		`db24f816a60cce6c578b8090c7fdace4 77a832777e4e9551c06ebc5935345984 fd5ca28f777fd21f9636b39b06e831f0
		 e8513015b5eeb3b63b06268cd4d72835 9d15a521b8199e834278f5fee620c481`,
		`0cbb63b6f145f458ce3e7aa6fc82b110 bc390c71745a1a003577d7f17b9cba61 632f62b482dd72d1f1fb73776aec2578
		 b7af33f93168ca9fc15b004022c7a0c9 55d5a88d490fc4fe8d7601b0ea1fa915`,
		`fe18aeaf15926dd22c4766442220b453 d592c71d5028c3fba591a6fd6a8667a8 1e4679540b9f79bc4fc326d244cf3c47
		 b380823197bf3bcd978ba1a68fbff636 6cf5a2d7d02ba69bebd3075f96fa0317`,
	}},
	{AlgSHA3_256, 637, [4]string{
		`1364e9224052458c21a66af018f3ab4b 86c73693174d7c5eb571b5ea2868c9b6 f8f85b02e3739061c7b611b6e07c6a25
		 6a6fa3baf56aadfafbc12b2734561182 3d1a446d2ea4042feaf3f31bb82e03c7`,
		`1f09799e6c56b9e0252005c69b81f6f9 3d6656a4d0d3084d62b3d2df6bdd5c36 8740b4042aaa9338e3c724ca07bedcf3
		 18cbbac3d2b73814c050c82e5f6a75f7 781ec3f4fdf2130aacb7342c4a2d56bd`,
		`0992e6385c26d414d51f5c9a3896aa08 13e6bdfee3ceb9213427f46a2987ac8c 6301ffd55b3b8faa328037c3c2de9538
		 560d102313ab6ebef3e8826b0dd2a674 c3679d8817d3584e7b8fbf804d0bc5f7`,
		`0e04e144af638751bf28c808f708e0c6 4545db9ac23f534a671e547c94bfed52 df4fb7489b1c929d32da77803305ae2f
		 85b305da273ad1dd16d3a574f558b6f2 4bea15b613865f5a1ea85c32854722b4`,
	}},
	{AlgSHA3_512, 1280, [4]string{
		`2e92ea598e2f2aa624a38ab2e17d5821 51099f057dbaf9798ad1ad7f71ce5732 be83630a719508440f3bbe2c2978cfcf
		 cbec78541eccafb47c16f7974aa146ee 7ebb8e03c4a193990f4fb66ce03bf287 fcb3d7bab29d6c55762f62c122f8ff73
		 0d77a046d5d9e9362dacc44e85987b7d de692f8cc678ce9b70e0752e307c3c84 97c89631c59c334212bced96dd1396ae
		 fcef5b70394be053b229e959b3ee2a70`,
		`ef9cd2a862fa14c585c1a21f2fa85fa8 184d6c6fbf46133e6375fae6f6126d62 af0afc76bd33b57671b81707618e8b46
		 d5c9ba0c6b4c87e9a43d699b3543b414 ae1ef3baf0530c7b9908faaf0fc505b7 ffc1baa13464d0f6b17a8928c89bacf5
		 56b8d76cf743f386d7f7f7c234987226 8b91218069eb9b0033b5c6850c6bb0af b8c280b0fb79efad815431cd9bdfa560
		 86be25d5d3535eea5fbaa7c7b6161e06`,
		`47b44f53903b687e4c329867547ee68e 19ee074143f9bec9a36b4b5301c82e8b f264e135ef85dacc9a4219a59fde1d4c
		 45e2b5d650b364ba674d9a1a70cbf22b 57d307c743f1191468a0bc9002eb5ed7 95a17c1fcecdc424c0274207997997cd
		 3be05d2862e7c90f75a6d1a5d88656b7 3e44d2b59cca5b727d441ef15cbf4af0 a38db184c988376bb2e3e400b16f71b4
		 3c2bd39d5d6db7ae846b4a6ac89312a0`,
		`2c4757a1b050ed4dda9bbd619f7565cb 0e70fa41f1a049cf7d5854d48e3b288f ba7ffd851f79a8da8cf19c2c8c209995
		 fe2829c82ade638c43e9afdf91eebad1 7f429b510012cd8b231688284762ed50 6552be988506e5e6236f291f48c7ab4b
		 d101252cc42a8cbd8dac0d9f37d35a95 21fbb8cf1205ef7b2567d58f59fb6849 5b4abaffccbb638697bd7a9a94dbcb1b
		 5cc169757f617ef9ae6a4a3df9e7ec91`,
	}},
	{AlgSHA3_512, 1277, [4]string{
		`135eeee72cfbcd6d8d13c966a772d1a8 3d0e6eb21d597e96fedb03fae8fa7a0f be11739912a2b2d8bf1a231fe1ecc95d
		 91322a5591fd3c6bcdd338719405e55b 5330b5882daed24bb682d2ea3780a61e c5a342548fa785f80cc8e925067cc9a9
		 2882827e67e14e355645403f86f4b334 df52905e5c1677ccdbb59e8fe127984f defcad9eebf2bbc836f443676e8220f1
		 cca4c93d9dda71baeaea00956f1bf056`,
		`1c1273ab5dda1924bca5f627e09b0ffa 332380bb121bf1f6103ac9d12ed2ee03 5caafe00f2d88bf767aceb49e048942d
		 aa027bc659900100bb203881fcac69cf 5153f12a3862d1084479b00dda169e91 c31fd2952fee97e7662073ffb38388cb
		 a57e2d62bde9afb65cce6d8a4bea30b9 a9fefec68ddc8fe765ff88db57ad92c0 e92bcb3eac1ac7460fd5ffed36b298d8
		 6ec325764987bf799b3ea95b00dd8ce5`,
		`0acfcfc22a83b7b4b6c034db40d1c053 1fafe265b463988880d84a8e3aed9f1e 17598db2ebd95bdac92a6e1755e3f252
		 28c58f1dc7ac27cfcf5132211f241cbb 5ddb55927c07d0e917318afe1022dec8 ff7b565135761ce3fe8a457223ef4e0f
		 4f5cabe9a0a4fc5192ad364cb52fccf6 17d1264035dc53122f5e10f336127ae9 b5bf2e18bdeb5f6cf64197b13d4f7ec7
		 dafde0fdd7b86065327076ed985cdf22`,
		`0193ceb751f06888eb37c7ad9af98df3 a21b98b3c60e157e42b42a485d46a2d9 a10bb95a1199da210afe75d73cb6671d
		 aabf8de557abdef2180121acd0135cbd 6ebd1bc3496f464408d6e22d393a93c0 d37d91950958519c8f8538a5c886af9c
		 ea72bd69f1dc0557f97e20a6351f9cce aeb4431e8153d53b249b003f8bd952cc 9e0ccf920fb8bcc491b3e13684948ac1
		 0561e539185b4a5e51fe0b5fa8109aef`,
	}},
}

// TestKDFaCocoonTPM checks the vectors of the implementation CocoonFS images
// are written with. Each is run with the label as given (ending in 0x00)
// and with that 0x00 removed: under cocoon-tpm's rule both must agree,
// because KDFa puts the terminator back. (The Rust test intends the same
// but its loop "for l in 0..1" only ever runs the first case.)
func TestKDFaCocoonTPM(t *testing.T) {
	label := []byte("test_kdf_a_label\x00")
	contextU := []byte("test_kdf_a_contextU")
	contextV := []byte("test_kdf_a_contextV")
	for _, vec := range cocoonKDFaVectors {
		h, err := LookupHash(vec.alg)
		if err != nil {
			t.Fatal(err)
		}
		key := seqKey(h.Size)
		for cfg, wantHex := range vec.want {
			var u, v []byte
			if cfg&2 != 0 {
				u = contextU
			}
			if cfg&1 != 0 {
				v = contextV
			}
			want := unhex(t, wantHex)
			if len(want) != (vec.bits+7)/8 {
				t.Fatalf("%s/%d/cfg%d: vector has %d bytes, transcription error", vec.alg, vec.bits, cfg, len(want))
			}
			for _, l := range [][]byte{label, label[:len(label)-1]} {
				got, err := KDFa(vec.alg, key, l, u, v, vec.bits)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s, %d bits, cfg %d, label %q:\n got %x\nwant %x", vec.alg, vec.bits, cfg, l, got, want)
				}
			}
		}
	}
}

// kdfaByHand spells out one KDFa block the slow way, with the terminator
// choice made explicit, to pin down the label rule independently of KDFa.
func kdfaByHand(t *testing.T, alg AlgID, key, label []byte, addZero bool, u, v []byte, bits int) []byte {
	t.Helper()
	h, err := LookupHash(alg)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	for i := uint32(1); len(out) < (bits+7)/8; i++ {
		var msg []byte
		msg = binary.BigEndian.AppendUint32(msg, i)
		msg = append(msg, label...)
		if addZero {
			msg = append(msg, 0)
		}
		msg = append(msg, u...)
		msg = append(msg, v...)
		msg = binary.BigEndian.AppendUint32(msg, uint32(bits))
		m := h.NewHMAC(key)
		m.Write(msg)
		out = m.Sum(out)
	}
	out = out[:(bits+7)/8]
	if bits%8 != 0 {
		out[0] &= 1<<(bits%8) - 1
	}
	return out
}

func TestKDFaLabelTerminator(t *testing.T) {
	key := []byte("a key, not secret here")
	u, v := []byte("U"), []byte("V")
	tests := []struct {
		name    string
		label   []byte
		addZero bool
	}{
		{"plain label gets 0x00", []byte("ENCRYPT"), true},
		{"label ending in 0x00 gets no second one", []byte("ENCRYPT\x00"), false},
		{"one-byte CocoonFS purpose label", []byte{5}, true},
		{"empty label gets nothing", []byte{}, false},
		{"nil label gets nothing", nil, false},
		{"single 0x00 label is left alone", []byte{0}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := KDFa(AlgSHA256, key, tc.label, u, v, 512)
			if err != nil {
				t.Fatal(err)
			}
			want := kdfaByHand(t, AlgSHA256, key, tc.label, tc.addZero, u, v, 512)
			if !bytes.Equal(got, want) {
				t.Errorf("got %x\nwant %x", got, want)
			}
			other := kdfaByHand(t, AlgSHA256, key, tc.label, !tc.addZero, u, v, 512)
			if bytes.Equal(got, other) {
				t.Errorf("output does not depend on the terminator choice")
			}
		})
	}
	// The terminator must not be written into spare capacity of label.
	backing := []byte("abcX")
	if _, err := KDFa(AlgSHA256, key, backing[:3], nil, nil, 128); err != nil || backing[3] != 'X' {
		t.Errorf("KDFa wrote into the label's spare capacity: %q, %v", backing, err)
	}
	// The contexts are simply concatenated, so moving bytes between them
	// must not change the result; this documents that, it is not a feature.
	a, _ := KDFa(AlgSHA256, key, []byte("L"), []byte("UV"), nil, 256)
	b, _ := KDFa(AlgSHA256, key, []byte("L"), []byte("U"), []byte("V"), 256)
	if !bytes.Equal(a, b) {
		t.Errorf("contextU||contextV is not a plain concatenation")
	}
}

func TestKDFaMasking(t *testing.T) {
	key := []byte("masking test key")
	for bits := 1; bits <= 80; bits++ {
		got, err := KDFa(AlgSHA1, key, []byte("MASK"), nil, nil, bits)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != (bits+7)/8 {
			t.Fatalf("bits=%d: got %d bytes", bits, len(got))
		}
		if rem := bits % 8; rem != 0 && got[0]>>rem != 0 {
			t.Errorf("bits=%d: first byte %08b has bits above the low %d set", bits, got[0], rem)
		}
		if want := kdfaByHand(t, AlgSHA1, key, []byte("MASK"), true, nil, nil, bits); !bytes.Equal(got, want) {
			t.Errorf("bits=%d: got %x, want %x", bits, got, want)
		}
	}
	// With many keys, some unmasked first byte must have had high bits
	// set, so the mask demonstrably did something.
	sawHigh := false
	for i := 0; i < 64 && !sawHigh; i++ {
		full, _ := KDFa(AlgSHA256, []byte{byte(i)}, []byte("X"), nil, nil, 3)
		if full[0] > 7 {
			t.Fatalf("3-bit output %d out of range", full[0])
		}
		// HMAC input: counter 1, label "X", terminator, bits = 3.
		h, _ := LookupHash(AlgSHA256)
		m := h.NewHMAC([]byte{byte(i)})
		m.Write([]byte{0, 0, 0, 1, 'X', 0, 0, 0, 0, 3})
		unmasked := m.Sum(nil)[0]
		if unmasked&^7 != 0 {
			sawHigh = true
		}
		if unmasked&7 != full[0] {
			t.Fatalf("key %d: masked %#x is not low bits of %#x", i, full[0], unmasked)
		}
	}
	if !sawHigh {
		t.Error("never saw a first byte that needed masking")
	}
}

func TestKDFaEdgeCases(t *testing.T) {
	out, err := KDFa(AlgSHA256, []byte("k"), []byte("L"), nil, nil, 0)
	if err != nil || len(out) != 0 {
		t.Errorf("bits=0: got %x, %v; want empty, nil", out, err)
	}
	// A length that is exactly a multiple of the digest size must not grow
	// an extra block, and one byte more must.
	for _, bits := range []int{256, 264} {
		out, err := KDFa(AlgSHA256, []byte("k"), []byte("L"), nil, nil, bits)
		if err != nil || len(out) != bits/8 {
			t.Errorf("bits=%d: got %d bytes, %v", bits, len(out), err)
		}
	}
	if _, err := KDFa(AlgSHA256, []byte("k"), nil, nil, nil, -1); !errors.Is(err, ErrInvalidLength) {
		t.Errorf("bits=-1: err = %v, want ErrInvalidLength", err)
	}
	if _, err := KDFa(AlgID(0x1234), []byte("k"), nil, nil, nil, 128); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("unknown hash: err = %v, want ErrUnsupportedAlgorithm", err)
	}
	if _, err := KDFa(AlgAES, []byte("k"), nil, nil, nil, 128); !errors.Is(err, ErrUnsupportedAlgorithm) {
		t.Errorf("cipher id as hash: err = %v, want ErrUnsupportedAlgorithm", err)
	}
	// SM3 is not covered by the published vectors; at least check it runs
	// and differs from SHA-256 of the same length.
	a, err := KDFa(AlgSM3_256, []byte("k"), []byte("L"), nil, nil, 256)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := KDFa(AlgSHA256, []byte("k"), []byte("L"), nil, nil, 256)
	if bytes.Equal(a, b) {
		t.Error("SM3 and SHA-256 KDFa outputs coincide")
	}
}

func BenchmarkKDFa(b *testing.B) {
	key := seqKey(32)
	label := []byte{1}
	ctx := []byte("COCOONFS context head and salt..")
	for _, bits := range []int{256, 1024} {
		b.Run(fmt.Sprintf("SHA256-%dbits", bits), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := KDFa(AlgSHA256, key, label, ctx, nil, bits); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
